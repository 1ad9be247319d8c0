"""The table of what each simulated client holds, as ``liteheart-sim run`` prints it before round 1.

The rows come from :func:`liteheart_core.data.partition.partition_table` (plain dicts, no rich in the core).
"""

from __future__ import annotations

from rich.table import Table


def render_partition_table(rows: list[dict]) -> Table:
    """A rich Table of :func:`liteheart_core.data.partition.partition_table` rows, with a total line."""
    table = Table(title="clients")
    if not rows:
        return table
    columns = list(rows[0])
    for col in columns:
        table.add_column(col, justify="left" if col == "name" else "right", no_wrap=col == "name")
    for row in rows:
        table.add_row(*(str(row[c]) for c in columns))
    totals = {c: sum(r[c] for r in rows) if all(isinstance(r[c], (int, float)) for r in rows) else ""
              for c in columns if c not in ("client", "name")}
    table.add_section()
    table.add_row("", "total", *(str(totals[c]) for c in columns[2:]))
    return table
