"""Fixtures: a real `fabric serve` (the binary at $FABRIC_BIN, default the repository's
target/release/fabric) on a free port with a temporary data directory and the echo agent
of echo.wat stored under the name `echo`; another one with `--auth`; one over TLS."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

from fabric_client import Client

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
ECHO_WAT = HERE / "echo.wat"
#: echo.wat compiled to binary (`test_the_echo_bytes_are_echo_wat` checks they are the same).
ECHO_WASM = bytes.fromhex(
    "0061736d01000000010c0260047f7f7f7f017f60000002440216776173695f736e617073686f745f70726576"
    "696577310766645f72656164000016776173695f736e617073686f745f70726576696577310866645f777269"
    "74650000030201010503010002071302066d656d6f72790200065f737461727400020a51014f01017f410041"
    "c00036020041044180800436020002400340410041004101410810000d01410828020021002000450d014110"
    "41c00036020041142000360200410141104101411810011a0c000b0b0b0034046e616d65011402000766645f"
    "72656164010866645f7772697465020601020100016e030f0102020004646f6e6501046e657874"
)
#: How long a server may take to say where it listens.
START_TIMEOUT = 30.0


def fabric_bin() -> str:
    if os.environ.get("FABRIC_BIN"):
        path = Path(os.environ["FABRIC_BIN"])
    else:
        target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
        path = target / "release" / "fabric"
    if not path.is_file():
        pytest.exit(f"no fabric binary at {path}: build it (cargo build --release -p fabric-cli) "
                    "or set FABRIC_BIN", returncode=2)
    return str(path.resolve())


class Server:
    """One `fabric serve` process; its stderr is echoed with a `[fabric]` prefix."""

    def __init__(self, data_dir: Path, args: List[str]) -> None:
        self.said: List[str] = []
        self.process = subprocess.Popen(
            [fabric_bin(), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir), *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env={**os.environ, "FABRIC_LOG": "warn"}, text=True)
        listening = threading.Event()
        self.url: Optional[str] = None

        def read() -> None:
            assert self.process.stderr is not None
            for line in self.process.stderr:
                line = line.rstrip("\n")
                if line.startswith("listening on ") and self.url is None:
                    self.url = line[len("listening on "):].strip()
                    listening.set()
                else:
                    self.said.append(line)
                print(f"[fabric] {line}")

        threading.Thread(target=read, daemon=True).start()
        if not listening.wait(START_TIMEOUT):
            self.stop()
            raise RuntimeError(f"fabric serve did not start; it said: {self.said}")

    def fabric(self, *args: str, token: Optional[str] = None) -> str:
        """A `fabric` client command against this server; its stdout."""
        env = {**os.environ, "FABRIC_URL": self.url or ""}
        if token is not None:
            env["FABRIC_TOKEN"] = token
        done = subprocess.run([fabric_bin(), *args], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"fabric {args}: {done.stderr}"
        return done.stdout

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(10)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server without auth, with `echo` stored (put as text by `fabric module put`)."""
    server = Server(tmp_path_factory.mktemp("fabric-data"), ["--workers", "4"])
    server.echo = json.loads(server.fabric("module", "put", str(ECHO_WAT), "--name", "echo", "--json"))["module"]
    yield server
    server.stop()


@pytest.fixture()
def client(server: Server) -> Iterator[Client]:
    with Client(server.url, timeout=30) as client:
        yield client


def new_token(tenant: str) -> dict:
    done = subprocess.run([fabric_bin(), "token", "new", "--tenant", tenant, "--json"],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


@pytest.fixture(scope="session")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with `--auth`: `server.token` is the tenant `acme`'s token."""
    dir = tmp_path_factory.mktemp("fabric-auth")
    token = new_token("acme")
    (dir / "auth.toml").write_text(f'[[token]]\ntenant = "acme"\nsha256 = "{token["sha256"]}"\n')
    server = Server(dir / "data", ["--auth", str(dir / "auth.toml")])
    server.token = token["token"]
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server over TLS with a certificate for 127.0.0.1 that a private CA signed
    (`server.ca_cert`), made with openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: no certificate for the TLS server")
    dir = tmp_path_factory.mktemp("fabric-tls")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=dir, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=fabric test CA",
            "-keyout", "ca.key", "-out", "ca.pem")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", "server.key", "-out", "server.csr")
    (dir / "ext.cnf").write_text("subjectAltName = IP:127.0.0.1\nbasicConstraints = critical, CA:FALSE\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", "ext.cnf", "-out", "server.pem")
    server = Server(dir / "data", ["--tls-cert", str(dir / "server.pem"), "--tls-key", str(dir / "server.key")])
    server.ca_cert = str(dir / "ca.pem")
    yield server
    server.stop()

