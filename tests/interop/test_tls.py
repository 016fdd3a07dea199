"""TLS on both ports, driven by the real tritonclient: HTTPS (HTTP/1.1, and h2 by ALPN) and gRPC
over TLS with certificates the test makes with openssl, and a renewed certificate served to new
connections after SIGHUP without a restart."""

import pathlib
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

REPO = pathlib.Path(__file__).resolve().parents[2]
BINARY = REPO / "target" / "debug" / "tollgate"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(folder: pathlib.Path, name: str):
    """A CA of its own (`name`-ca.pem) and a server certificate for 127.0.0.1 it signed."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name} CA",
            "-keyout", f"{name}-ca.key", "-out", f"{name}-ca.pem", cwd=folder)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=folder)
    (folder / f"{name}.ext").write_text("subjectAltName = IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{name}-ca.pem", "-CAkey", f"{name}-ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=folder)


def peer_issuer(port: int, cafile: pathlib.Path) -> str:
    context = ssl.create_default_context(cafile=str(cafile))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            issuer = dict(pair[0] for pair in tls.getpeercert()["issuer"])
            return issuer["commonName"]


@pytest.fixture(scope="module")
def tls_gateway():
    with tempfile.TemporaryDirectory() as tmp:
        folder = pathlib.Path(tmp)
        make_certificates(folder, "first")
        make_certificates(folder, "second")
        # The served files: the first pair now, the second copied over them later.
        (folder / "server.pem").write_bytes((folder / "first.pem").read_bytes())
        (folder / "server.key").write_bytes((folder / "first.key").read_bytes())
        config = folder / "tls.toml"
        config.write_text(
            '[server]\ntls_cert_path = "server.pem"\ntls_key_path = "server.key"\n'
            f'[ledger]\npath = "{tmp}/ledger.sqlite"\n'
            f'[[models]]\nname = "digits"\npath = "{REPO}/models/digits/1/model.onnx"\n'
            "max_batch_size = 8\n"
        )
        http, grpc = free_port(), free_port()
        process = subprocess.Popen(
            [str(BINARY), "serve", "--config", str(config), "--http-addr", f"127.0.0.1:{http}",
             "--grpc-addr", f"127.0.0.1:{grpc}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            context = ssl.create_default_context(cafile=str(folder / "first-ca.pem"))
            for _ in range(150):
                try:
                    urllib.request.urlopen(f"https://127.0.0.1:{http}/v2/health/ready", timeout=1,
                                           context=context)
                    break
                except OSError:
                    time.sleep(0.2)
            yield folder, http, grpc, process
        finally:
            process.terminate()
            process.wait(timeout=30)


def rows():
    return np.random.default_rng(5).random((3, 64), dtype=np.float32) * 16


def test_tritonclient_over_https(tls_gateway):
    folder, http, _, _ = tls_gateway
    client = httpclient.InferenceServerClient(
        f"127.0.0.1:{http}", ssl=True, ssl_options={"ca_certs": str(folder / "first-ca.pem")})
    assert client.is_server_ready()
    inp = httpclient.InferInput("input", [3, 64], "FP32")
    inp.set_data_from_numpy(rows())
    result = client.infer("digits", [inp])
    assert result.as_numpy("label").shape == (3,)
    # Plain HTTP on the TLS port is refused, not served.
    with pytest.raises(Exception):
        urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/ready", timeout=5)


def test_https_offers_h2_by_alpn(tls_gateway):
    folder, http, _, _ = tls_gateway
    context = ssl.create_default_context(cafile=str(folder / "first-ca.pem"))
    context.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", http), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.selected_alpn_protocol() == "h2"


def test_tritonclient_over_grpc_tls(tls_gateway):
    folder, _, grpc, _ = tls_gateway
    client = grpcclient.InferenceServerClient(
        f"127.0.0.1:{grpc}", ssl=True, root_certificates=str(folder / "first-ca.pem"))
    assert client.is_server_ready()
    inp = grpcclient.InferInput("input", [3, 64], "FP32")
    inp.set_data_from_numpy(rows())
    result = client.infer("digits", [inp])
    assert result.as_numpy("label").shape == (3,)


def test_sighup_serves_a_renewed_certificate_to_new_connections(tls_gateway):
    folder, http, grpc, process = tls_gateway
    assert peer_issuer(http, folder / "first-ca.pem") == "first CA"
    # A file that does not read: the old certificate keeps serving.
    (folder / "server.pem").write_text("not a certificate\n")
    process.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert process.poll() is None
    assert peer_issuer(http, folder / "first-ca.pem") == "first CA"
    # The renewed pair, then SIGHUP: new connections on both ports get it.
    (folder / "server.key").write_bytes((folder / "second.key").read_bytes())
    (folder / "server.pem").write_bytes((folder / "second.pem").read_bytes())
    process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if peer_issuer(http, folder / "second-ca.pem") == "second CA":
                break
        except ssl.SSLError:
            time.sleep(0.1)
    assert peer_issuer(http, folder / "second-ca.pem") == "second CA"
    assert peer_issuer(grpc, folder / "second-ca.pem") == "second CA"
