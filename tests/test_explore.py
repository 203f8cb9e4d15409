"""jaxcnn explore without a browser: each layer type's arithmetic for one pixel against the forward
pass, the explorer's answers against NumPy, and the server against bad, oversized and hostile requests."""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxcnn.data import confusion_matrix, load_dataset
from jaxcnn.demos import ARTICLE_FILTER, ARTICLE_IMAGE
from jaxcnn.explore_server import MAX_BODY_BYTES
from jaxcnn.explorer import MAX_CELL_IMAGES, Explorer, ExploreRequestError, explains
from jaxcnn.model import Model
from jaxcnn.spec import parse_spec

from conftest import serving
from datasets import TINY_SPEC, train_folder_run

ROOT = Path(__file__).resolve().parents[1]

# Every window case: padding on each side, stride, dilation, groups; max pooling padded with -inf,
# average pooling padded both ways.
WINDOWS_SPEC = {
    "format": "jaxcnn.spec/1",
    "name": "windows",
    "input": [9, 7, 4],
    "layers": [
        {"type": "conv", "name": "same", "filters": 6, "size": 3, "padding": "same", "activation": "relu"},
        {
            "type": "conv",
            "name": "strided",
            "filters": 4,
            "size": [3, 2],
            "stride": 2,
            "padding": [[2, 0], [1, 1]],
            "dilation": [1, 2],
            "groups": 2,
            "activation": "tanh",
        },
        {"type": "max_pool", "name": "maxp", "size": 2, "stride": 1, "padding": [[1, 0], [0, 1]]},
        {"type": "avg_pool", "name": "avg_in", "size": 3, "stride": 2, "padding": 1, "count_include_pad": True},
        {
            "type": "avg_pool",
            "name": "avg_out",
            "inputs": "maxp",
            "size": 3,
            "stride": 2,
            "padding": 1,
            "count_include_pad": False,
        },
        {"type": "concat", "name": "both", "inputs": ["avg_in", "avg_out"]},
        {"type": "conv", "name": "nobias", "filters": 2, "size": 2, "use_bias": False},
        {"type": "flatten", "name": "flat"},
        {"type": "dense", "name": "out", "units": 3},
    ],
}


def layer_outputs(model: Model, params, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every layer's output for one image, and the image as ``"input"``."""
    maps = model.intermediates(params, jax.numpy.asarray(x[None]))
    return {"input": x, **{k: np.asarray(v[0]) for k, v in maps.items()}}


def test_every_pixels_arithmetic_gives_the_layers_output():
    model = Model(parse_spec(WINDOWS_SPEC, "windows.json"))
    params = model.init(jax.random.key(3))
    params["same"]["bias"] = jax.numpy.linspace(-0.5, 0.5, 6)
    x = np.random.default_rng(0).normal(size=(9, 7, 4)).astype(np.float32)
    outputs = layer_outputs(model, params, x)
    checked = 0
    for layer in model.spec.layers:
        if not explains(layer):
            assert layer.type in ("concat", "flatten", "dense")
            continue
        h, w, c = layer.output_shape
        for row in range(h):
            for col in range(w):
                for channel in range(c):
                    got = layer.explain(params.get(layer.name, {}), outputs[layer.inputs[0]], row, col, channel)
                    assert got is not None
                    json.dumps(got, allow_nan=False)  # JSON-ready: padding is null, not NaN
                    want = outputs[layer.name][row, col, channel]
                    assert got["output"] == pytest.approx(want, abs=1e-5), (layer.name, row, col, channel)
                    checked += 1
                    if got["kind"] == "conv":
                        assert np.sum(got["products"]) + got["bias"] == pytest.approx(got["pre_activation"], abs=1e-9)
    assert checked > 300


def test_the_articles_top_left_output_is_explained_as_four():
    spec = {"format": "jaxcnn.spec/1", "name": "article", "input": [5, 5, 1],
            "layers": [{"type": "conv", "filters": 1, "size": 3, "use_bias": False}, {"type": "flatten"}]}  # fmt: skip
    conv = parse_spec(spec, "article.json").layers[0]
    weights = {"kernel": ARTICLE_FILTER.reshape(3, 3, 1, 1)}
    got = conv.explain(weights, ARTICLE_IMAGE.reshape(5, 5, 1).astype(np.float32), 0, 0, 0)
    assert got is not None
    assert got["window"] == [[[1.0], [1.0], [1.0]], [[0.0], [1.0], [1.0]], [[0.0], [0.0], [1.0]]]
    assert np.asarray(got["products"])[..., 0].tolist() == [[1, 0, 1], [0, 1, 0], [0, 0, 1]]
    assert (got["sum"], got["bias"], got["output"]) == (4.0, 0.0, 4.0)


def test_max_pools_padding_is_never_kept_and_shows_as_null():
    padded = {"type": "max_pool", "size": 2, "stride": 1, "padding": [[1, 0], [1, 0]]}
    spec = {"format": "jaxcnn.spec/1", "name": "p", "input": [2, 2, 1], "layers": [padded, {"type": "flatten"}]}
    pool = parse_spec(spec, "p.json").layers[0]
    x = -np.arange(1, 5, dtype=np.float32).reshape(2, 2, 1)  # all negative: -inf padding must still lose
    got = pool.explain({}, x, 0, 0, 0)
    assert got is not None
    assert got["window"] == [[None, None], [None, -1.0]]
    assert got["kept"] == [1, 1] and got["output"] == -1.0


@pytest.fixture(scope="module")
def explore_run(tmp_path_factory):
    return train_folder_run(tmp_path_factory.mktemp("explore"), TINY_SPEC)


@pytest.fixture(scope="module")
def explorer(explore_run):
    return Explorer(explore_run)


def pixels_of(image: np.ndarray) -> str:
    return base64.b64encode(image.tobytes()).decode()


def test_explorer_answers_equal_the_run_and_numpy(explorer, explore_run):
    data = load_dataset(explorer.run.config["dataset"]["name"])
    image = data.test_images[5]
    want = explorer.run.predict(image[None])[0]
    assert np.allclose(explorer.predict(image)["probabilities"], want, atol=1e-6)
    maps = explorer.activations(image)
    conv = maps["layers"]["conv1"]
    values = np.frombuffer(base64.b64decode(conv["data"]), "<f4").reshape(conv["shape"])
    fitted = explorer.run.preprocess.to_float(image[None].astype(np.uint8))
    reference = layer_outputs(explorer.model, explorer.run.params, np.asarray(fitted)[0])
    assert np.allclose(values, reference["conv1"], atol=1e-6)
    assert explorer.explain(image, "conv1", 2, 3, 1)["layer_value"] == pytest.approx(float(reference["conv1"][2, 3, 1]))
    picked = explorer.test_image(5)
    assert picked["pixels"] == pixels_of(image) and picked["label"] == data.test_labels[5]

    predictions = explorer.run.predict(data.test_images).argmax(axis=1)
    counts = confusion_matrix(data.test_labels, predictions, 4)
    assert explorer.confusion()["counts"] == counts.tolist()
    t, p = np.unravel_index(np.argmax(counts), counts.shape)
    cell = explorer.confusion_cell(int(t), int(p))
    assert cell["count"] == counts[t, p] and len(cell["images"]) == min(counts[t, p], MAX_CELL_IMAGES)
    assert all(data.test_labels[i] == t and predictions[i] == p for i in cell["indices"])


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda e, img: e.explain(img, "nope", 0, 0, 0), "no layer named 'nope'; the network has conv1"),
        (lambda e, img: e.explain(img, "dense1", 0, 0, 0), "for conv, max_pool and avg_pool layers"),
        (lambda e, img: e.explain(img, "conv1", 8, 0, 0), "row 8 is outside layer 'conv1' (8x8x4): choose 0 to 7"),
        (lambda e, img: e.explain(img, "pool1", 0, 0, 4), "channel 4 is outside"),
        (lambda e, img: e.test_image(64), "index 64: the test set has 64 images; choose 0 to 63"),
        (lambda e, img: e.confusion_cell(0, 4), "predicted=4: classes are 0 to 3"),
        (lambda e, img: e.decode_pixels("AAAA"), "'pixels' holds 3 bytes; a 8x8x1 image has 64"),
        (lambda e, img: e.decode_pixels("not base64!"), "'pixels' is not valid base64"),
        (lambda e, img: e.decode_pixels(12), "'pixels' must be a base64 string"),
        (lambda e, img: e.why(img, "guided"), "method 'guided': choose one of gradient, smoothgrad"),
        (lambda e, img: e.why(img, "gradient", 4), "class 4: classes are 0 to 3"),
        (lambda e, img: e.why(img, "grad-cam", None, "flatten1"), "layer 'flatten1': Grad-CAM takes a layer with an"),
        (lambda e, img: e.why(img, "gradient", None, None, 3), "randomize 3: the network has 2 layers with weights"),
        (lambda e, img: e.unit_picture("pool1", 0), "layer 'pool1': pictures are drawn for the layers with weights"),
        (lambda e, img: e.unit_picture("conv1", 4), "unit 4 is outside layer 'conv1', which has 4: choose 0 to 3"),
    ],
)
def test_explorer_rejects_bad_requests_with_a_message(explorer, call, fragment):
    with pytest.raises(ExploreRequestError, match=None) as caught:
        call(explorer, np.zeros((8, 8, 1), np.uint8))
    assert fragment in str(caught.value)
    assert caught.value.status == 400


def test_missing_test_images_are_a_404_that_says_why(explore_run, tmp_path):
    moved = Explorer(explore_run, data_dir=str(tmp_path))
    moved.run.config["dataset"]["name"] = f"folder:{tmp_path / 'gone'}"
    with pytest.raises(ExploreRequestError) as caught:
        moved.confusion()
    assert caught.value.status == 404 and "the run's test images are not at hand" in str(caught.value)
    assert moved.network()["layers"][0]["name"] == "conv1"  # the rest of the page still works


# ---------------------------------------------------------------- the server


@pytest.fixture(scope="module")
def server(explorer):
    with serving(explorer) as running:
        yield running


def request(server, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=30)
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response, data


def test_the_server_listens_on_loopback_only_by_default(server):
    assert server.server_address[0] == "127.0.0.1"
    assert server.url.startswith("http://127.0.0.1:")


def test_the_page_and_its_files_are_served_with_a_strict_policy(server):
    response, page = request(server, "GET", "/")
    assert response.status == 200 and b'data-testid="draw-canvas"' in page
    assert "default-src 'self'" in response.getheader("Content-Security-Policy")
    for path in ("/explore.js", "/explore.css"):
        response, _ = request(server, "GET", path)
        assert response.status == 200
    response, network = request(server, "GET", "/api/network")
    assert response.status == 200 and json.loads(network)["class_names"][0] == "bottom-left"


@pytest.mark.parametrize(
    "path",
    ["/../jaxcnn/explorer.py", "/%2e%2e/%2e%2e/etc/passwd", "/explore_page/../explorer.py", "//etc/passwd",
     "/explore.js/../../pyproject.toml", "/..%2f..%2fpyproject.toml", "/api/../../README.md", "/config.json"],
)  # fmt: skip
def test_no_request_reaches_a_file_outside_the_page(server, path):
    response, body = request(server, "GET", path)
    assert response.status == 404
    assert "no such page" in json.loads(body)["error"]


def post(server, path: str, payload: object, **headers):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return request(server, "POST", path, body, {"Content-Type": "application/json", **headers})


@pytest.mark.parametrize(
    ("path", "payload", "status", "fragment"),
    [
        ("/api/predict", b"{not json", 400, "not JSON"),
        ("/api/predict", [1, 2], 400, "must be a JSON object"),
        ("/api/predict", {}, 400, "'pixels' must be a base64 string"),
        ("/api/predict", {"pixels": "AAAA"}, 400, "holds 3 bytes"),
        (
            "/api/explain",
            {"pixels": pixels_of(np.zeros(64, np.uint8)), "layer": "conv1", "row": "x", "col": 0, "channel": 0},
            400,
            "'row' must be an integer",
        ),
        (
            "/api/explain",
            {"pixels": pixels_of(np.zeros(64, np.uint8)), "layer": "conv1", "row": 0, "col": 0, "channel": True},
            400,
            "'channel' must be an integer",
        ),
        ("/api/run-code", {"pixels": ""}, 404, "no such API"),
        (
            "/api/why",
            {"pixels": pixels_of(np.zeros(64, np.uint8)), "method": "gradient", "class": "x"},
            400,
            "'class' must be an integer",
        ),
        (
            "/api/why",
            {"pixels": pixels_of(np.zeros(64, np.uint8)), "method": "grad-cam", "layer": 3},
            400,
            "'layer' must be a string or null",
        ),
        ("/api/unit", {"layer": "conv1", "unit": None}, 400, "'unit' must be an integer"),
    ],
)
def test_malformed_requests_get_a_4xx_with_a_message(server, path, payload, status, fragment):
    response, body = post(server, path, payload)
    assert response.status == status
    assert fragment in json.loads(body)["error"]


def test_query_errors_get_a_4xx(server):
    for path, fragment in [("/api/test-image?index=abc", "'index' must be an integer"),
                           ("/api/test-image", "'index' must be an integer"),
                           ("/api/test-image?index=-1", "choose 0 to 63"),
                           ("/api/confusion-cell?true=1", "'predicted' must be an integer")]:  # fmt: skip
        response, body = request(server, "GET", path)
        assert response.status == 400, path
        assert fragment in json.loads(body)["error"]


def test_an_oversized_body_is_refused_unread(server):
    host, port = server.server_address[:2]
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(f"POST /api/predict HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: {MAX_BODY_BYTES + 1}\r\n"
                     "\r\n".encode())  # fmt: skip
        received = b""  # answered at once, without the body: the server does not wait for it, and closes
        while chunk := sock.recv(65536):
            received += chunk
    reply = received.decode()
    assert reply.startswith("HTTP/1.1 413")
    assert f"at most {MAX_BODY_BYTES:,} are accepted" in reply
    response, _ = post(server, "/api/predict", {"pixels": pixels_of(np.zeros(64, np.uint8))})
    assert response.status == 200  # and it goes on serving


def test_a_body_without_its_length_and_garbage_requests_do_not_stop_the_server(server):
    host, port = server.server_address[:2]
    response, body = request(server, "POST", "/api/predict", None, {"Transfer-Encoding": "chunked"})
    assert response.status == 411 and "Content-Length" in json.loads(body)["error"]
    replies = []
    for garbage in (b"\x00\xff\xfe garbage\r\n\r\n", b"GET " + b"a" * 70000 + b" HTTP/1.1\r\n\r\n"):
        with socket.create_connection((host, port), timeout=30) as sock:
            sock.sendall(garbage)
            replies.append(sock.recv(100))
    assert replies[1].startswith(b"HTTP/1.1 414")
    response, _ = request(server, "GET", "/api/network")
    assert response.status == 200


def raw_exchange(server, request_bytes: bytes) -> bytes:
    """Send ``request_bytes`` as they are (no client library adds a Host) and return the whole reply."""
    with socket.create_connection(server.server_address[:2], timeout=30) as sock:
        sock.sendall(request_bytes)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def test_only_requests_that_name_this_server_are_answered(server, capfd):
    """Issue 27 (3): before, any Host was answered, so a page on another site could read the run by DNS
    rebinding (its name made to resolve to 127.0.0.1)."""
    port = server.server_address[1]
    body = json.dumps({"pixels": pixels_of(np.zeros(64, np.uint8))})
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LocalHost.:{port}"):
        for method, path, extra in (("GET", "/api/network", ""), ("POST", "/api/predict", body)):
            headers = f"Host: {host}\r\nConnection: close\r\nContent-Length: {len(extra)}\r\n"
            reply = raw_exchange(server, f"{method} {path} HTTP/1.1\r\n{headers}\r\n{extra}".encode())
            assert reply.startswith(b"HTTP/1.1 200"), (host, reply[:200])
    capfd.readouterr()
    foreign = [f"rebind.example:{port}", "rebind.example", f"127.0.0.1:{port + 1}", "localhost", f"[::1:{port}",
               f"127.0.0.1.rebind.example:{port}", f"localhost:{port}:{port}", f"localhost:²{port}", None]  # fmt: skip
    for named in foreign:
        for method, path, extra in (("GET", "/", ""), ("GET", "/api/network", ""), ("POST", "/api/predict", body)):
            header = "" if named is None else f"Host: {named}\r\n"
            request_text = f"{method} {path} HTTP/1.1\r\n{header}Content-Length: {len(extra)}\r\n\r\n{extra}"
            reply = raw_exchange(server, request_text.encode())
            assert reply.startswith(b"HTTP/1.1 403"), (named, reply[:200])
            assert b"--allow-host" in reply and b"class_names" not in reply and b"probabilities" not in reply
    logged = capfd.readouterr().err.splitlines()
    assert len(logged) == 3 * len(foreign) and all("refused a request from 127.0.0.1 for Host" in x for x in logged)


def test_the_host_rule_allows_the_bound_address_named_hosts_and_addresses_off_loopback():
    from jaxcnn.explore_server import host_allowed

    assert host_allowed("127.0.0.1:80", "127.0.0.1", 80) and host_allowed("127.0.0.1", "127.0.0.1", 80)
    assert host_allowed("[::1]:8000", "::1", 8000) and host_allowed("localhost:8000", "::1", 8000)
    assert not host_allowed("192.168.1.5:8000", "127.0.0.1", 8000)  # another address, server on loopback only
    assert host_allowed("192.168.1.5:8000", "0.0.0.0", 8000)  # listening everywhere: any address, no name
    assert host_allowed("192.168.1.5:8000", "192.168.1.5", 8000) and not host_allowed("box:8000", "0.0.0.0", 8000)
    assert host_allowed("Box.lan:8000", "0.0.0.0", 8000, ("box.lan",)) and not host_allowed("", "0.0.0.0", 8000)
    assert not host_allowed("box.lan:8001", "0.0.0.0", 8000, ("box.lan",))


def test_two_hundred_requests_at_once_are_all_answered(server):
    """Issue 27 (6): with the standard library's listen backlog of 5, most of such a burst was reset."""
    import concurrent.futures

    body = {"pixels": pixels_of(np.full(64, 7, np.uint8))}

    def one(k: int) -> int:
        try:
            response, _ = post(server, "/api/predict", body) if k % 2 else request(server, "GET", "/api/network")
        except OSError as err:
            return -err.errno if err.errno else -1
        return response.status

    with concurrent.futures.ThreadPoolExecutor(200) as pool:
        statuses = list(pool.map(one, range(200)))
    assert statuses == [200] * 200, sorted(set(statuses))


def test_a_slow_request_does_not_hold_up_the_others(explorer, server, monkeypatch):
    """Issue 27 (6): one lock served every request, so a large network's feature maps held up predictions."""
    import threading

    entered, release = threading.Event(), threading.Event()
    maps = explorer._maps

    def slow_maps(*args):
        entered.set()
        release.wait(60)
        return maps(*args)

    monkeypatch.setattr(explorer, "_maps", slow_maps)
    slow_image = pixels_of(np.full(64, 201, np.uint8))  # not the cached image
    slow = threading.Thread(target=post, args=(server, "/api/activations", {"pixels": slow_image}))
    slow.start()
    try:
        assert entered.wait(30)
        response, answer = post(server, "/api/predict", {"pixels": pixels_of(np.full(64, 3, np.uint8))})
        assert response.status == 200 and len(json.loads(answer)["probabilities"]) == 4
        response, _ = request(server, "GET", "/api/network")
        assert response.status == 200 and slow.is_alive()  # both answered while the slow one still runs
    finally:
        release.set()
        slow.join(60)


def test_numbers_in_headers_and_queries_are_ascii_digits_only(server):
    """Issue 27 (13): '²' passed str.isdigit and then broke int(); 5,000 digits broke int() too (500s)."""
    host, port = server.server_address[:2]
    reply = raw_exchange(server, f"POST /api/predict HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: ²\r\n"
                                 "\r\n".encode())  # fmt: skip
    assert reply.startswith(b"HTTP/1.1 411") and b"digits 0-9" in reply
    for query in ("index=%C2%B2", "index=" + "9" * 5000, "index=%D9%A3"):
        response, body = request(server, "GET", f"/api/test-image?{query}")
        assert response.status == 400 and "'index' must be an integer written with the digits 0-9" in json.loads(
            body)["error"]  # fmt: skip
    response, _ = request(server, "GET", "/api/network")
    assert response.status == 200


def test_a_client_gone_mid_request_is_not_a_traceback(server, capfd):
    """Issue 27 (15): a disconnect printed a two-part traceback on the user's console."""
    for error in (ConnectionResetError(104, "Connection reset by peer"), BrokenPipeError(32, "Broken pipe")):
        try:
            raise error
        except OSError:
            server.handle_error(None, ("127.0.0.1", 5555))
    host, port = server.server_address[:2]
    for _ in range(20):  # and for real: ask for every feature map, then reset the connection at once
        sock = socket.create_connection((host, port), timeout=30)
        body = json.dumps({"pixels": pixels_of(np.full(64, 9, np.uint8))})
        sock.sendall(f"POST /api/activations HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: {len(body)}\r\n"
                     f"\r\n{body}".encode())  # fmt: skip
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()
    response, _ = request(server, "GET", "/api/network")
    assert response.status == 200
    assert "Traceback" not in capfd.readouterr().err


def test_a_bad_port_is_refused_before_the_run_is_loaded(explore_run):
    for port in ("99999", "-1", "²"):
        result = subprocess.run([sys.executable, "-m", "jaxcnn", "explore", str(explore_run), "--port", port],
                                capture_output=True, text=True, timeout=120, cwd=ROOT)  # fmt: skip
        assert result.returncode == 2 and "argument --port" in result.stderr, result.stderr
        assert "loading" not in result.stdout and "Traceback" not in result.stderr


def explore_command(run: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONFAULTHANDLER": "1"}  # a SIGABRT prints every thread's stack
    return subprocess.Popen([sys.executable, "-m", "jaxcnn", "explore", str(run), *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)  # fmt: skip


@pytest.mark.slow
def test_the_command_prints_its_url_serves_and_stops_cleanly_on_ctrl_c(explore_run):
    process = explore_command(explore_run)
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline(), process.stdout.readline()]
        assert "jaxcnn explore: http://127.0.0.1:" in lines[1] and "Ctrl-C stops the server" in lines[1]
        url = lines[1].split()[2]
        port = int(url.rsplit(":", 1)[1].strip("/"))
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("GET", "/api/network")
        assert connection.getresponse().status == 200
        process.send_signal(signal.SIGINT)
        try:
            out, err = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:  # say where it hung
            process.send_signal(signal.SIGABRT)
            out, err = process.communicate(timeout=30)
            pytest.fail(f"explore did not stop within 30 s of Ctrl-C; its output:\n{out}\n{err}")
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert "jaxcnn explore: stopped" in out and "Traceback" not in err


@pytest.mark.slow
def test_a_taken_port_is_one_error_line(explore_run):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = explore_command(explore_run, "--port", str(port))
        _, err = process.communicate(timeout=120)
    assert process.returncode == 1
    assert err.startswith(f"error: cannot listen on 127.0.0.1 port {port}: "), err
    assert "Traceback" not in err


def test_a_graph_with_batch_norm_and_a_residual_block_is_explored_layer_by_layer(graph_folder_run):
    explorer = Explorer(graph_folder_run)
    names = [layer.name for layer in explorer.model.spec.layers]
    assert "res.conv" in names and "res.add" in names
    image = np.full((8, 8, 1), 90, np.uint8)
    maps = explorer.activations(image)
    assert list(maps["layers"]) == names
    rows = {row["name"]: row for row in explorer.network()["layers"]}
    assert rows["res.add"]["inputs"] == ["res.conv", "r1"] and rows["res.conv"]["explains"]
    outputs = explorer._layer_outputs(image)
    got = explorer.explain(image, "res.conv", 0, 7, 2)  # a corner: padded taps
    assert got["input_layer"] == "r1" and got["inside"][0] == [False, False, False]
    assert got["output"] == pytest.approx(float(outputs["res.conv"][0, 7, 2]), abs=1e-5) == got["layer_value"]
