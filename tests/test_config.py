"""Config validation: every problem names the file, the key path and what is wrong."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from gateway.config_load import ConfigError, load_config

GOOD = """
[server]
listen = "127.0.0.1:4000"
admin_listen = "127.0.0.1:4001"

[timeouts]
connect = 2
first_byte = 5.5

[vendors.openai]
kind = "openai"
base_url = "https://api.openai.com/v1/"
api_key_env = "TEST_OPENAI_KEY"

[vendors.anthropic]
kind = "anthropic"
base_url = "https://api.anthropic.com"

[[routes]]
name = "chat"
targets = [
  { vendor = "openai", model = "gpt-4.1" },
  { vendor = "anthropic", model = "claude-sonnet-4-20250514", prefill = true, context_window = 200000 },
]
fallback_response = "busy"

[prices]
"openai/gpt-4.1" = { input = 2.00, output = 8.00 }
"""


def write(tmp_path, text: str):
    p = tmp_path / "patchbay.toml"
    p.write_text(textwrap.dedent(text))
    return p


def problems(tmp_path, text: str, env=None) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as ei:
        load_config(write(tmp_path, text), env=env if env is not None else {"TEST_OPENAI_KEY": "sk-x"})
    return ei.value.problems


def test_good_config_loads(tmp_path):
    cfg = load_config(write(tmp_path, GOOD), env={"TEST_OPENAI_KEY": "sk-secret"})
    assert cfg.timeouts.first_byte == 5.5 and cfg.timeouts.idle == 15.0
    assert cfg.vendors["openai"].base_url == "https://api.openai.com/v1"
    assert cfg.vendors["openai"].api_key == "sk-secret"
    assert "sk-secret" not in repr(cfg.vendors["openai"])  # the key never prints
    route = cfg.routes["chat"]
    assert [t.id for t in route.targets] == ["openai/gpt-4.1", "anthropic/claude-sonnet-4-20250514"]
    assert route.targets[1].prefill and route.targets[1].context_window == 200000
    assert route.fallback_response == "busy"
    assert cfg.prices["openai/gpt-4.1"].output == 8.0
    assert cfg.store.path == str(tmp_path / "patchbay.db")
    assert cfg.overrides_path == str(tmp_path / "patchbay.overrides.toml")


@pytest.mark.parametrize("text,key,fragment", [
    ("[server]\nlisten = 4000\n", "server.listen", "must be a string, got integer"),
    ("[server]\nlisten = \"nohost\"\n", "server.listen", "HOST:PORT"),
    ("[timeouts]\nconnect = \"3\"\n", "timeouts.connect", "must be a number, got string"),
    ("[timeouts]\nconnect = -1\n", "timeouts.connect", "greater than 0"),
    ("[retry]\nmax_attempts_per_target = true\n", "retry.max_attempts_per_target", "got boolean"),
    ("[prober]\nmode = \"ping\"\n", "prober.mode", "must be one of models, completion"),
    ("[breaker]\ncooldwn = 3\n", "breaker.cooldwn", "unknown key"),
    ("[bogus]\n", "bogus", "unknown key"),
    ("[store]\nlog_bodies = \"yes\"\n", "store.log_bodies", "true or false"),
])
def test_wrong_values_are_named(tmp_path, text, key, fragment):
    base = GOOD.split("[vendors.openai]")[1]
    found = problems(tmp_path, text + "\n[vendors.openai]" + base)
    assert any(k == key and fragment in reason for k, reason in found), found


def test_unknown_vendor_in_route(tmp_path):
    text = GOOD.replace('{ vendor = "openai", model = "gpt-4.1" }', '{ vendor = "opneai", model = "gpt-4.1" }')
    found = problems(tmp_path, text)
    assert ("routes[0].targets[0].vendor", "unknown vendor 'opneai' (vendors: anthropic, openai)") in found


def test_duplicate_target(tmp_path):
    text = GOOD.replace('{ vendor = "openai", model = "gpt-4.1" },',
                        '{ vendor = "openai", model = "gpt-4.1" }, { vendor = "openai", model = "gpt-4.1" },')
    found = problems(tmp_path, text)
    assert any(k == "routes[0].targets[1]" and "duplicate target 'openai/gpt-4.1'" in r for k, r in found), found


def test_missing_env_var_for_key(tmp_path):
    found = problems(tmp_path, GOOD, env={})
    assert ("vendors.openai.api_key_env",
            "environment variable TEST_OPENAI_KEY is not set (it holds this vendor's API key)") in found


def test_every_problem_is_reported_at_once(tmp_path):
    text = GOOD.replace('kind = "anthropic"', 'kind = "anthropc"').replace("connect = 2", "connect = \"2\"")
    found = problems(tmp_path, text)
    keys = {k for k, _ in found}
    assert {"vendors.anthropic.kind", "timeouts.connect"} <= keys


def test_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "missing.toml", env={})
    p = write(tmp_path, "[server\nlisten=1")
    with pytest.raises(ConfigError, match="not valid TOML") as ei:
        load_config(p, env={})
    assert str(p) in ei.value.render()


def test_check_config_command(tmp_path):
    good = write(tmp_path, GOOD)
    env = {"TEST_OPENAI_KEY": "sk-x", "PATH": "/usr/bin:/bin"}
    ok = subprocess.run([sys.executable, "-m", "gateway.cli", "check-config", "-c", str(good)],
                        capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    assert "route chat: openai/gpt-4.1 -> anthropic/claude-sonnet-4-20250514" in ok.stdout
    assert "sk-x" not in ok.stdout + ok.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text(GOOD.replace('listen = "127.0.0.1:4000"', "listen = 4000"))
    res = subprocess.run([sys.executable, "-m", "gateway.cli", "check-config", "-c", str(bad)],
                         capture_output=True, text=True, env=env)
    assert res.returncode == 2
    assert f"{bad}: server.listen: must be a string, got integer" in res.stderr


def test_same_target_defined_differently_in_two_routes(tmp_path):
    text = GOOD + '''
[[routes]]
name = "other"
targets = [{ vendor = "anthropic", model = "claude-sonnet-4-20250514" }]
'''
    found = problems(tmp_path, text)
    assert any(k == "routes[1].targets" and "defined differently in routes 'chat' and 'other'" in r
               for k, r in found), found


def test_the_readme_example_config_is_valid(tmp_path):
    import pathlib
    import re

    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    example = next(b for b in re.findall(r"```toml\n(.*?)```", readme, re.S) if "[server]" in b)
    env = {"OPENAI_API_KEY": "a", "ANTHROPIC_API_KEY": "b", "DEEPSEEK_API_KEY": "c", "GEMINI_API_KEY": "d"}
    cfg = load_config(write(tmp_path, example), env=env)
    assert list(cfg.routes) == ["chat"] and len(cfg.vendors) == 4
    assert cfg.routes["chat"].targets[1].prefill and cfg.server.read_timeout == 30


# --- the declaration in gateway/config.py is the one source: loader, errors, README ---------------

README = __import__("pathlib").Path(__file__).resolve().parents[1] / "README.md"


def _readme_config_section() -> str:
    import re

    text = README.read_text()
    start = text.index("## Configuration (`patchbay.toml`)")
    end = text.index("\n## ", start + 1)
    section = text[start:end]
    assert re.search(r"```toml\n", section), "the config section has no TOML example"
    return section


def _documented_keys(doc: dict, prefix: str = "") -> dict[str, object]:
    """{declared-style key path: value} for every key written in the README's TOML example."""
    out: dict[str, object] = {}
    for name, value in doc.items():
        if prefix in ("vendors", "prices"):
            out.update(_documented_keys(value, f"{prefix}.*"))
            continue
        path = f"{prefix}.{name}" if prefix else name
        if isinstance(value, dict):
            out.update(_documented_keys(value, path))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            if prefix:
                out[path] = value
            for item in value:
                out.update(_documented_keys(item, f"{path}[]"))
        else:
            out[path] = value
    return out


def test_the_readme_config_reference_matches_the_declaration():
    import re
    import tomllib

    from gateway.config_load import reference

    declared = {k.path: k for k in reference()}
    section = _readme_config_section()
    block = re.search(r"```toml\n(.*?)```", section, re.S).group(1)
    shown = _documented_keys(tomllib.loads(block))

    # Every key in the example is declared (test_the_readme_example_config_is_valid loads it too).
    assert not set(shown) - set(declared), f"README shows undeclared keys: {sorted(set(shown) - set(declared))}"

    # Keys the example leaves out are described in the prose, in the paragraph about their table.
    prose = re.sub(r"```toml\n.*?```", "", section, flags=re.S)
    owners = {"Vendors": "vendors.*", "A target": "routes[].targets[]"}
    in_prose: set[str] = set()
    for paragraph in prose.split("\n\n"):
        for token in re.findall(r"`([a-z_]+)(?: = [^`]*)?`", paragraph):
            table = next((t for start, t in owners.items() if paragraph.startswith(start)), None)
            if table is not None:
                assert f"{table}.{token}" in declared, f"README prose documents undeclared key {table}.{token}"
                in_prose.add(f"{table}.{token}")
            else:
                assert any(p.rsplit(".", 1)[-1] == token for p in declared), f"README names unknown key `{token}`"
    missing = set(declared) - set(shown) - in_prose
    assert not missing, f"declared keys the README does not document: {sorted(missing)}"

    # The README says the [server] ... [upstream] values are the defaults: they must be.
    for path, value in shown.items():
        key = declared[path]
        if "*" not in path and "[]" not in path:
            assert not key.required and value == key.default, \
                f"README shows {path} = {value!r}, default is {key.default!r}"


def test_every_declared_key_has_a_type_and_a_one_line_doc():
    from gateway.config_load import reference

    keys = reference()
    assert len({k.path for k in keys}) == len(keys) > 30
    for k in keys:
        assert k.doc and "\n" not in k.doc and k.type.startswith(("a ", "an ", "true")), k


def test_problems_use_toml_key_paths_and_reasons_from_the_declaration(tmp_path):
    text = GOOD.replace('"openai/gpt-4.1" = { input = 2.00, output = 8.00 }',
                        '"openai/gpt-4.1" = { input = 2.00, output = "8" }\nfree = 3') \
        .replace('model = "gpt-4.1" }', 'model = "gpt-4.1", wieght = 2 }') \
        .replace('kind = "anthropic"', 'kind = "anthropic"\napi_key = "sk-inline"\nheaders = { x-team = 7 }')
    found = dict(problems(tmp_path, text))
    assert found['prices."openai/gpt-4.1".output'] == "must be a number, got string"
    assert found['prices.free'].startswith("must be a table like { input = 2.0, output = 8.0 }, got integer")
    assert found["routes[0].targets[0].wieght"] == \
        "unknown key (expected one of: context_window, model, prefill, vendor)"
    # api_key and name are set by the loader, never written in the file
    assert found["vendors.anthropic.api_key"].startswith(
        "unknown key (expected one of: api_key_env, base_url, ca_file,")
    assert found["vendors.anthropic.headers.x-team"] == "must be a string, got integer"


def test_route_checks_across_keys(tmp_path):
    text = GOOD + '''
[[routes]]
name = "chat"
targets = [{ vendor = "openai", model = "x" }]

[[routes]]
name = "openai/gpt-4.1"
targets = [{ model = "gpt-4.1" }, { vendor = "openai", model = "" }]

[[routes]]
name = "gpt"
targets = [{ vendor = "openai", model = "gpt-4.1" }]
'''
    found = problems(tmp_path, text)
    assert ("routes[1].name", "duplicate route name 'chat'") in found
    assert ("routes[2].targets[0].vendor", "is required") in found
    assert ("routes[2].targets[1].model", "must not be empty") in found
    assert ("routes", "route name 'openai/gpt-4.1' is also a target id; clients could not tell them apart") \
        not in found   # route 2 is broken, so it is not compared
    ok = GOOD + '\n[[routes]]\nname = "openai/gpt-4.1"\ntargets = [{ vendor = "openai", model = "o3" }]\n'
    assert ("routes", "route name 'openai/gpt-4.1' is also a target id; clients could not tell them apart") \
        in problems(tmp_path, ok)


def test_defaults_and_paths_are_loaded_from_the_declaration(tmp_path):
    from gateway.config import Config, VendorConfig

    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.pem").write_text("x")
    minimal = ('[vendors.local]\nkind = "openai"\nbase_url = "http://127.0.0.1:8000/v1/"\n'
               'ca_file = "certs/ca.pem"\n\n[[routes]]\nname = "r"\ntargets = [{ vendor = "local", model = "m" }]\n')
    cfg = load_config(write(tmp_path, minimal), env={})
    assert isinstance(cfg, Config)
    assert cfg.store.path == str(tmp_path / "patchbay.db")   # [store] left out: default, still resolved
    assert cfg.server.listen == "127.0.0.1:4000" and cfg.upstream.max_event_bytes == 1024 * 1024
    assert isinstance(cfg.timeouts.connect, float) and cfg.store.retention_days == 30
    v = cfg.vendors["local"]
    assert (v.name, v.base_url, v.api_key, v.headers) == ("local", "http://127.0.0.1:8000/v1", None, {})
    assert v.ca_file == str(tmp_path / "certs" / "ca.pem")
    assert list(cfg.targets()) == ["local/m"]
    # Built by hand (tests, bench): positional, and the secrets stay out of repr.
    hand = VendorConfig("x", "openai", "https://x", api_key="sk-hand", headers={"h": "v"}, proxy="http://u:pw@p:1")
    assert "sk-hand" not in repr(hand) and "pw@" not in repr(hand)


def test_python_callers_may_pass_none_for_a_table(tmp_path):
    from gateway.config_load import parse_config

    raw = {"server": None, "prices": None, "vendors": {"v": {"kind": "openai", "base_url": "http://h"}},
           "routes": [{"name": "r", "targets": [{"vendor": "v", "model": "m"}]}]}
    cfg = parse_config(raw, str(tmp_path / "patchbay.toml"), {})
    assert cfg.server.listen == "127.0.0.1:4000" and cfg.prices == {}


@pytest.mark.parametrize("routes,reason", [
    (None, "must be an array of tables ([[routes]]), got NoneType"),
    ([], "at least one [[routes]] entry is required"),
])
def test_a_config_without_routes_is_refused(tmp_path, routes, reason):
    from gateway.config_load import parse_config

    with pytest.raises(ConfigError) as ei:
        parse_config({"vendors": {}, "routes": routes}, str(tmp_path / "patchbay.toml"), {})
    assert ("routes", reason) in ei.value.problems


def test_check_config_names_listener_price_and_token_mistakes(tmp_path, capsys):
    """Issue 12: each of these gets one line from check-config (errors refuse, warnings print)."""
    from gateway.cli import main

    same = GOOD.replace('admin_listen = "127.0.0.1:4001"', 'admin_listen = "127.0.0.1:4000"')
    assert ("server.admin_listen", "must differ from server.listen (127.0.0.1:4000): the admin API needs "
            "its own port") in problems(tmp_path, same)
    no_output = GOOD.replace('{ input = 2.00, output = 8.00 }', '{ input = 2.00 }')
    assert any(k == 'prices."openai/gpt-4.1"' and "needs output too" in w for k, w in problems(tmp_path, no_output))

    text = (GOOD.replace('admin_listen = "127.0.0.1:4001"', 'admin_listen = "0.0.0.0:4001"')
            + '"openai/gpt-4.2" = { input = 1.0, output = 2.0 }\n')
    path = write(tmp_path, text)
    import os
    os.environ.pop("PATCHBAY_ADMIN_TOKEN", None)
    os.environ["TEST_OPENAI_KEY"] = "sk-x"
    try:
        assert main(["check-config", "-c", str(path)]) == 0
    finally:
        os.environ.pop("TEST_OPENAI_KEY", None)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("warning:")]
    assert len(lines) == 3, lines
    assert any('prices."openai/gpt-4.2": no route has this target' in ln for ln in lines)
    assert any("server.admin_listen: 0.0.0.0:4001 accepts admin connections from every network" in ln
               for ln in lines)
    assert any("PATCHBAY_ADMIN_TOKEN is not set: the admin API stays off, so the panel and operator "
               "commands cannot attach" in ln for ln in lines)


def test_serve_on_a_taken_port_says_so_in_one_line(tmp_path):
    import socket

    from tests.serve_proc import serve_command
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        text = GOOD.replace('listen = "127.0.0.1:4000"', f'listen = "127.0.0.1:{port}"').replace(
            'admin_listen = "127.0.0.1:4001"', 'admin_listen = "127.0.0.1:0"')
        path = write(tmp_path, text)
        res = subprocess.run([*serve_command(), "serve", "-c", str(path)], capture_output=True, text=True,
                             env={"TEST_OPENAI_KEY": "sk-x", "PATH": "/usr/bin:/bin"}, timeout=60)
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    assert (f"patchbay: cannot listen on 127.0.0.1:{port} (server.listen): Address already in use; another "
            f"process holds that port: stop it or change server.listen in {path}") in res.stderr
