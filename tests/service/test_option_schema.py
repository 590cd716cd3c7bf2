"""The HTTP form fields and the OpenAPI schema are built from the same option table as the CLI and
``validate()`` (meshforge.config.OPTIONS): no range, choice or default is written twice."""

from __future__ import annotations

import pytest

from meshforge.config import OPTIONS, PRESETS
from meshforge.service.app import create_app
from meshforge.service.settings import Settings


@pytest.fixture(scope="module")
def schema(tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    return create_app(Settings.from_env({"MESHFORGE_SERVICE_DATA_DIR": str(data)})).openapi()


def form(schema, prefix):
    names = [k for k in schema["components"]["schemas"] if k.startswith(prefix)]
    assert len(names) == 1, names
    return schema["components"]["schemas"][names[0]]["properties"]


def check(field, option, default_text=None):
    value = next(t for t in field["anyOf"] if t.get("type") != "null")
    assert value.get("minimum") == option.minimum and value.get("maximum") == option.maximum, field
    assert field.get("enum") == (list(option.choices) if option.choices else None), field
    described = option.describe(default_text)
    assert described.endswith(f"(default: {default_text or option.default})")
    assert field["description"].endswith(described), (field["description"], described)


def test_generate_form_fields_come_from_the_option_table(schema):
    fields = form(schema, "Body_submit_job")
    shared = [name for name in OPTIONS if name in fields]
    assert set(shared) >= {"resolution", "faces", "texture_size", "foreground_ratio", "background"}
    for name in shared:
        check(fields[name], OPTIONS[name])
    assert fields["preset"]["enum"] == list(PRESETS)


def test_export_form_fields_come_from_the_option_table(schema):
    fields = form(schema, "Body_submit_export")
    for name in ("faces", "texture_size"):
        check(fields[name], OPTIONS[name], default_text="the job's")
    assert fields["preset"]["enum"] == list(PRESETS)


def test_the_options_endpoint_serves_the_table_with_the_servers_caps(client_factory):
    """``GET /v1/options`` (what the studio builds its form from): the table's ranges, choices, defaults and
    help, each maximum lowered to this server's cap, and the presets."""
    client = client_factory(max_texture_size=2048, max_faces=50_000, max_resolution=256)
    r = client.get("/v1/options")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["presets"] == PRESETS
    caps = {"resolution": 256, "faces": 50_000, "texture_size": 2048}
    served = body["options"]
    assert set(served) >= {"resolution", "faces", "texture_size", "textures", "foreground_ratio", "background"}
    for name, info in served.items():
        option = OPTIONS[name]
        assert info["default"] == option.default and type(info["default"]) is type(option.default), name
        assert info["minimum"] == option.minimum and info["choices"] == (
            list(option.choices) if option.choices else None
        )
        highest = [x for x in (option.maximum, caps.get(name)) if x is not None]
        assert info["maximum"] == (min(highest) if highest else None), name
        assert (
            info["help"] == option.describe()
            and info["type"] == {int: "integer", float: "number", str: "string", bool: "boolean"}[option.kind]
        )
