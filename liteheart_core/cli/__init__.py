"""The command layer the three programs share: ``liteheart-server``, ``liteheart-client`` and ``liteheart-sim``.

The only part of ``liteheart_core`` that may use typer and rich (``pyproject.toml``'s import-linter
contracts say so); it never imports Flower, ``server``, ``client`` or ``simulations``.

- ``console``     the stdout/stderr consoles and ``fail`` (one error line, non-zero exit)
- ``progress``    rich bars over the core's plain ``progress(done, total)`` callbacks
- ``data_cmd``    the ``data`` sub-commands (prepare, synth, download, info) of all three CLIs
- ``train_cmd``   centralised training and evaluation (``liteheart-sim train``, ``liteheart-server teacher train``)
- ``processes``   the child processes of the ``start`` commands: Flower executables, ports, stopping trees
- ``tls``         reading and checking certificates and keys (the server's and a site's)
- ``summary``     the final summary of a run, read back from the registry
"""
