"""A local certificate authority for the sandboxes' HTTPS (the real Bitrix24 cloud is HTTPS only).

`local_tls(names)` makes a throw-away CA with `trustme` and a server certificate for loopback
(`127.0.0.1`, `::1`, `localhost`) plus any other names, and writes them as PEM files: the server
serves `certfile`/`keyfile`, a client trusts `ca_bundle` — through `REQUESTS_CA_BUNDLE` (requests,
b24pysdk), `SSL_CERT_FILE` (aiohttp, fast-bitrix24) or the Bitrix24 connector's `ca_bundle`
setting. Nothing is installed system-wide and nothing is trusted beyond this process's choice.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LocalTLS:
    dir: Path
    ca_bundle: str          # the CA certificate a client trusts
    certfile: str           # the server's certificate chain
    keyfile: str            # the server's private key


def local_tls(*names: str, directory: str | Path | None = None) -> LocalTLS:
    try:
        import trustme
    except ImportError as exc:                     # a test dependency, not a runtime one
        raise RuntimeError("HTTPS for the sandbox needs the `trustme` package (pip install trustme, or "
                           "the project's test extra)") from exc
    d = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="syncd-tls-"))
    d.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="syncd sandbox CA")
    server = ca.issue_cert("127.0.0.1", "::1", "localhost", *names)
    paths = LocalTLS(d, str(d / "ca.pem"), str(d / "server.pem"), str(d / "server.key"))
    ca.cert_pem.write_to_path(paths.ca_bundle)
    for i, blob in enumerate(server.cert_chain_pems):
        blob.write_to_path(paths.certfile, append=i > 0)
    server.private_key_pem.write_to_path(paths.keyfile)
    return paths


__all__ = ["LocalTLS", "local_tls"]
