#!/usr/bin/env python3
"""test-mcp.py - `coarchctl mcp` driven by a scripted MCP client over stdio, against a real
coarchd with the real embedding model.

Checks: initialize (version negotiation, capabilities, serverInfo), tools/list (four tools with
input schemas), tools/call of each tool (index_repository with and without wait, search_code
finding a function by description and by name with file, lines, symbol and snippet,
job_status, list_repositories), tool errors as results with isError (nothing indexed yet, bad
and unknown arguments, a missing directory, a job that does not exist), protocol errors
(parse error, unknown method, unknown tool, a batch), notifications unanswered, stdout
carrying only JSON-RPC, and exit 0 at the end of input.

Needs the model (all-MiniLM-L6-v2) in $COARCH_TEST_MODEL_DIR or the default models directory:
without it the test skips (77), or fails when CI is set.  Env (set by meson): COARCHCTL,
COARCHD.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ctl = os.environ.get("COARCHCTL", "")
daemon = os.environ.get("COARCHD", "")
model = os.environ.get("COARCH_TEST_MODEL_DIR",
                       os.path.expanduser("~/.local/share/coarch/models/all-MiniLM-L6-v2"))
if not os.access(ctl, os.X_OK) or not os.access(daemon, os.X_OK):
    print("SKIP: coarchctl or coarchd not built")
    sys.exit(77)
if not os.path.isfile(os.path.join(model, "config.json")):
    if os.environ.get("CI"):
        print(f"FAIL: no embedding model at {model} (run scripts/fetch-model); CI needs it")
        sys.exit(1)
    print(f"SKIP: no embedding model at {model} (run scripts/fetch-model)")
    sys.exit(77)

tmp = tempfile.mkdtemp(prefix="coarch-test-mcp.")
env = {k: v for k, v in os.environ.items() if not k.startswith("COARCH_")}
env.update(COARCH_SOCKET=f"{tmp}/run/coarchd.sock", COARCH_DATA_DIR=f"{tmp}/data",
           COARCH_MODEL=model, NO_COLOR="1")
os.makedirs(f"{tmp}/run", mode=0o700)
repo = f"{tmp}/repo"
os.makedirs(f"{repo}/src")
with open(f"{repo}/src/config.py", "w") as f:
    f.write('''"""Configuration handling."""


def parse_config_file(path):
    settings = {}
    with open(path, encoding="utf-8") as handle:
        for raw in handle:
            key, sep, value = raw.strip().partition("=")
            if sep:
                settings[key.strip()] = value.strip()
    return settings


def polygon_area(points):
    area = 0.0
    for i, p in enumerate(points):
        q = points[(i + 1) % len(points)]
        area += p[0] * q[1] - q[0] * p[1]
    return abs(area) / 2.0
''')
failures = 0


def fail(msg):
    global failures
    failures += 1
    print(f"FAIL: {msg}")


def ok(msg):
    print(f"ok: {msg}")


dproc = subprocess.Popen([daemon], env=env, stdout=subprocess.DEVNULL,
                         stderr=open(f"{tmp}/daemon.log", "w"))
for _ in range(100):
    if subprocess.run([ctl, "--no-autostart", "ping"], env=env, capture_output=True).returncode == 0:
        break
    time.sleep(0.1)
else:
    print("FAIL: coarchd did not start:", open(f"{tmp}/daemon.log").read()[-2000:])
    sys.exit(1)

mcp = subprocess.Popen([ctl, "--no-autostart", "mcp"], env=env, cwd=f"{repo}/src",
                       stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                       stderr=open(f"{tmp}/mcp.err", "w"), text=True, bufsize=1)
next_id = 0


def send_raw(line):
    mcp.stdin.write(line + "\n")
    mcp.stdin.flush()


def recv():
    line = mcp.stdout.readline()
    if not line:
        raise AssertionError("coarchctl mcp closed stdout; stderr: "
                             + open(f"{tmp}/mcp.err").read()[-1000:])
    return json.loads(line)  # anything but one JSON message per line fails here


def request(method, params=None):
    global next_id
    next_id += 1
    msg = {"jsonrpc": "2.0", "id": next_id, "method": method}
    if params is not None:
        msg["params"] = params
    send_raw(json.dumps(msg))
    resp = recv()
    assert resp.get("jsonrpc") == "2.0" and resp.get("id") == next_id, resp
    return resp


def call(name, arguments=None):
    resp = request("tools/call", {"name": name, "arguments": arguments or {}})
    assert "result" in resp, resp
    res = resp["result"]
    assert isinstance(res["content"], list) and res["content"][0]["type"] == "text", res
    return res


def check(name, fn):
    try:
        fn()
        ok(name)
    except AssertionError as e:
        fail(f"{name}: {e}")


def t_initialize():
    r = request("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                               "clientInfo": {"name": "test", "version": "1"}})["result"]
    assert r["protocolVersion"] == "2025-06-18", r
    assert "tools" in r["capabilities"], r
    assert r["serverInfo"]["name"] == "coarch" and r["serverInfo"]["version"], r
    old = request("initialize", {"protocolVersion": "2024-11-05"})["result"]
    assert old["protocolVersion"] == "2024-11-05", old
    future = request("initialize", {"protocolVersion": "2099-01-01"})["result"]
    assert future["protocolVersion"] == "2025-06-18", future
    send_raw(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
    assert request("ping")["result"] == {}  # and the notification got no answer of its own


def t_tools_list():
    tools = {t["name"]: t for t in request("tools/list")["result"]["tools"]}
    assert set(tools) == {"search_code", "index_repository", "job_status",
                          "list_repositories"}, tools
    for t in tools.values():
        assert t["description"] and t["inputSchema"]["type"] == "object", t
    assert tools["search_code"]["inputSchema"]["required"] == ["query"]


def t_nothing_indexed():
    r = call("search_code", {"query": "parse a configuration file"})
    assert r["isError"] and "index_repository" in r["content"][0]["text"], r


def t_index_and_wait():
    r = call("index_repository", {"path": "..", "wait": True})  # relative to the cwd, src/
    assert not r["isError"], r
    s = r["structuredContent"]
    assert s["state"] == "done" and s["repo"] == repo and s["files_done"] == 1, s
    assert "done" in r["content"][0]["text"], r


def t_search_description():
    r = call("search_code", {"query": "read key value settings from a file", "k": 3})
    assert not r["isError"], r
    hits = r["structuredContent"]["results"]
    assert hits and hits[0]["symbol"] == "parse_config_file", hits
    h = hits[0]
    assert h["path"] == "src/config.py" and h["file"] == f"{repo}/src/config.py", h
    lines = open(h["file"]).read().split("\n")
    fn = lines.index("def parse_config_file(path):") + 1
    assert h["start_line"] <= fn <= h["end_line"], h
    assert "def parse_config_file" in h["snippet"], h
    assert f"{repo}/src/config.py:{h['start_line']}-{h['end_line']}" in r["content"][0]["text"]


def t_search_options():
    r = call("search_code", {"query": "polygon_area", "mode": "lexical", "repository": repo,
                             "language": "Python", "path": "*.py", "k": 1})
    assert not r["isError"], r
    hits = r["structuredContent"]["results"]
    assert len(hits) == 1 and hits[0]["symbol"] == "polygon_area", hits
    r = call("search_code", {"query": "polygon_area", "path": "*.go"})
    assert not r["isError"] and r["structuredContent"]["results"] == [], r
    assert "no results" in r["content"][0]["text"], r


def t_tool_errors():
    cases = [
        ({"query": ""}, "query"),
        ({}, "required"),
        ({"query": "x", "k": 0}, "\"k\""),
        ({"query": "x", "k": "ten"}, "\"k\""),
        ({"query": "x", "mode": "fuzzy"}, "mode"),
        ({"query": "x", "colour": "red"}, "unknown argument"),
        ({"query": "x", "language": "klingon"}, "unknown language"),
        ({"query": "x", "repository": f"{tmp}/nowhere"}, "No such file"),
        ({"query": "x", "repository": tmp}, "not indexed"),
    ]
    for args, want in cases:
        r = call("search_code", args)
        assert r["isError"] and want in r["content"][0]["text"], (args, r)
    r = call("index_repository", {"path": f"{tmp}/nowhere"})
    assert r["isError"] and "No such file" in r["content"][0]["text"], r
    r = call("index_repository", {"path": repo, "wait": "yes"})
    assert r["isError"] and "wait" in r["content"][0]["text"], r
    r = call("job_status", {"job": 4242})
    assert r["isError"] and "4242" in r["content"][0]["text"], r


def t_index_async_and_jobs():
    r = call("index_repository", {"path": repo})
    assert not r["isError"], r
    job = r["structuredContent"]["job"]
    for _ in range(100):
        j = call("job_status", {"job": job})
        assert not j["isError"], j
        jobs = j["structuredContent"]["jobs"]
        assert len(jobs) == 1 and jobs[0]["job"] == job, jobs
        if jobs[0]["state"] in ("done", "failed", "cancelled"):
            break
        time.sleep(0.1)
    assert jobs[0]["state"] == "done", jobs
    every = call("job_status")["structuredContent"]["jobs"]
    assert len(every) >= 2, every


def t_repos():
    r = call("list_repositories")
    assert not r["isError"], r
    repos = r["structuredContent"]["repos"]
    assert [x["path"] for x in repos] == [repo] and repos[0]["files"] == 1, repos
    assert repo in r["content"][0]["text"]


def t_protocol_errors():
    send_raw("this is not json")
    e = recv()
    assert e["id"] is None and e["error"]["code"] == -32700, e
    e = request("resources/list")
    assert e["error"]["code"] == -32601, e
    e = request("tools/call", {"name": "rm_rf", "arguments": {}})
    assert e["error"]["code"] == -32602 and "rm_rf" in e["error"]["message"], e
    e = request("tools/call", {"name": "search_code", "arguments": [1, 2]})
    assert e["error"]["code"] == -32602, e
    send_raw(json.dumps([{"jsonrpc": "2.0", "id": 99, "method": "ping"}]))
    e = recv()
    assert e["error"]["code"] == -32600, e
    send_raw(json.dumps({"id": 100, "method": "ping"}))  # no "jsonrpc": "2.0"
    e = recv()
    assert e["id"] == 100 and e["error"]["code"] == -32600, e
    assert request("ping")["result"] == {}  # still serving


def t_eof():
    mcp.stdin.close()
    rest = mcp.stdout.read()
    assert rest == "", rest
    assert mcp.wait(timeout=10) == 0


try:
    for name, fn in [("initialize", t_initialize), ("tools/list", t_tools_list),
                     ("nothing indexed is a tool error", t_nothing_indexed),
                     ("index_repository wait=true", t_index_and_wait),
                     ("search_code by description", t_search_description),
                     ("search_code options", t_search_options),
                     ("tool errors", t_tool_errors),
                     ("index_repository and job_status", t_index_async_and_jobs),
                     ("list_repositories", t_repos),
                     ("protocol errors", t_protocol_errors),
                     ("exit 0 at end of input", t_eof)]:
        check(name, fn)
finally:
    if mcp.poll() is None:
        mcp.kill()
    dproc.send_signal(signal.SIGTERM)
    try:
        rc = dproc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        dproc.kill()
        rc = -9
    if rc != 0:
        fail(f"coarchd exited {rc}: {open(f'{tmp}/daemon.log').read()[-2000:]}")
    shutil.rmtree(tmp, ignore_errors=True)

if failures:
    print(f"{failures} check(s) failed")
    sys.exit(1)
print("all mcp checks passed")
