"""Why sites cannot be made to run only a signed app in Flower 1.42 (and so `start` signs nothing).

Flower's SuperNode can refuse any app bundle (FAB) not signed by a key it trusts
(``flower-supernode --trusted-entities``, Ed25519 keys). The check itself works with a
signature we make. But the SuperLink keeps a FAB's signatures only for apps fetched from
Flower Hub: ``start_run`` stores an app submitted with ``flwr run`` (what ``liteheart-server
start`` does) with no verification records, whatever the request carried, so a SuperNode
with trusted entities refuses every such app ("App verification is not supported by the
connected SuperLink"), ours included. This test runs Flower's own code for each step; if a
later Flower keeps submitted signatures, it fails and signing can be wired in.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from flwr.cli.build import build_fab_from_disk
from flwr.common.constant import NOOP_ACCOUNT_NAME, NOOP_FLWR_AID
from flwr.proto.control_pb2 import StartRunRequest
from flwr.proto.fab_pb2 import Fab as ProtoFab
from flwr.supercore.auth.typing import AccountInfo
from flwr.supercore.fab import Fab
from flwr.supercore.primitives.asymmetric_ed25519 import create_message_to_sign
from flwr.superlink.config_loader import get_federation_manager, get_objectstore_linkstate_factories
from flwr.superlink.servicer.control import control_handlers
from flwr.supernode.start_client_internal import _verify_fab

from server.bundle import write_fab
from server.superlink import Deployment

KEY_ID = "fpk_liteheart_coordinator"


def signed(content: bytes, key: ed25519.Ed25519PrivateKey) -> dict[str, str]:
    """Verification records as Flower Hub hands them out: one signature over (time, sha256 of the FAB)."""
    at = int(time.time())
    signature = key.sign(create_message_to_sign(hashlib.sha256(content).digest(), at))
    return {
        KEY_ID: json.dumps({"signature": base64.urlsafe_b64encode(signature).rstrip(b"=").decode(), "signed_at": at}),
        "valid_license": "Valid",
    }


def trusted(key: ed25519.Ed25519PrivateKey) -> dict[str, str]:
    """What a site's ``--trusted-entities`` YAML maps: key id -> OpenSSH public key."""
    return {
        KEY_ID: key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    }


def test_a_submitted_app_loses_its_signature_so_a_site_that_trusts_our_key_would_refuse_it(tmp_path: Path) -> None:
    # Prepare: the app bundle `start` submits, signed with the coordinator's Ed25519 key
    dep = Deployment(run_dir=tmp_path, port=9092)
    write_fab(dep, {"run-id": "r1", "rounds": 1})
    content = build_fab_from_disk(dep.fab_dir)
    ours, other = ed25519.Ed25519PrivateKey.generate(), ed25519.Ed25519PrivateKey.generate()
    digest = hashlib.sha256(content).hexdigest()
    _, states = get_objectstore_linkstate_factories(":flwr-in-memory:", get_federation_manager(is_simulation=False))
    state = states.state()

    # Execute: the SuperLink's own StartRun handler, given the FAB with its signature attached
    request = StartRunRequest(fab=ProtoFab(hash_str=digest, content=content, verifications=signed(content, ours)))
    response = control_handlers.start_run(request, AccountInfo(NOOP_FLWR_AID, NOOP_ACCOUNT_NAME), state, "grpc-rere")
    stored = state.get_fab(digest)

    # Assert: the site-side check accepts our signature and refuses another key's ...
    assert _verify_fab(Fab(digest, content, signed(content, ours)), trusted(ours))
    assert not _verify_fab(Fab(digest, content, signed(content, other)), trusted(ours))
    # ... but the run was created with the FAB stripped of every verification record, which is all a site
    # downloads (GetFab): it then has no "valid_license" and no signature, and refuses the run's messages
    assert response.run_id and stored is not None and stored.content == content
    assert stored.verifications == {}
    assert not _verify_fab(stored, trusted(ours))
