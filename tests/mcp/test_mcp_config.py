"""Configuration as MCP clients pass it: environment first, flags on top, clear refusals."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mcp_server.config import (
    DEFAULT_WAIT_SECONDS,
    ConfigError,
    default_output_dir,
    load_config,
)

pytestmark = pytest.mark.mcp


def test_defaults_are_absolute_and_safe(tmp_path: Path) -> None:
    config = load_config([], {"FLUX_API_TOKEN": "r8_abc"})
    assert config.output_dir.is_absolute()
    assert config.output_dir.name == "flux-tools"
    assert config.wait_seconds == DEFAULT_WAIT_SECONDS == 45
    assert config.transport == "stdio" and config.host == "127.0.0.1"
    assert config.preview_side == 768
    assert "r8_abc" not in repr(config)
    (tmp_path / "Pictures").mkdir()
    assert default_output_dir(tmp_path) == tmp_path / "Pictures" / "flux-tools"
    assert default_output_dir(tmp_path / "nohome") == tmp_path / "nohome" / "flux-tools"


def test_environment_then_flags(tmp_path: Path) -> None:
    env = {
        "REPLICATE_API_TOKEN": "r8_from_replicate",
        "FLUX_BASE_URL": "http://127.0.0.1:9/v1/",
        "FLUX_MODEL": "flux-pro",
        "FLUX_OUTPUT_DIR": str(tmp_path / "env"),
        "FLUX_MCP_WAIT_SECONDS": "20",
        "FLUX_MCP_PREVIEW": "off",
    }
    config = load_config([], env)
    assert config.api_token == "r8_from_replicate"
    assert config.base_url == "http://127.0.0.1:9/v1"
    assert config.model == "black-forest-labs/flux-pro"
    assert config.output_dir == tmp_path / "env"
    assert config.wait_seconds == 20 and config.preview_side == 0
    flagged = load_config(
        ["--output-dir", str(tmp_path / "flag"), "--wait-seconds", "5", "--preview-size", "512"],
        env,
    )
    assert flagged.output_dir == tmp_path / "flag"
    assert flagged.wait_seconds == 5 and flagged.preview_side == 512


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        ([], {"FLUX_OUTPUT_DIR": "images"}, "relative path"),
        (["--output-dir", "./out"], {}, "relative path"),
        ([], {"FLUX_MODEL": "someone/else"}, "Known models"),
        ([], {"FLUX_MCP_WAIT_SECONDS": "soon"}, "FLUX_MCP_WAIT_SECONDS"),
        ([], {"FLUX_MCP_WAIT_SECONDS": "0"}, "between 1"),
        ([], {"FLUX_MCP_PREVIEW": "huge"}, "FLUX_MCP_PREVIEW"),
        ([], {"FLUX_BASE_URL": "ftp://example.com"}, "http(s) URL"),
        (["--transport", "streamable-http", "--host", "192.168.1.5"], {}, "FLUX_MCP_AUTH_TOKEN"),
        ([], {"FLUX_MCP_AUTH_TOKEN": "short"}, "too short"),
        ([], {"FLUX_EDIT_MODEL": "flux-schnell"}, "does not edit images; models that do"),
        (["--edit-model", "flux-pro"], {}, "flux-dev, flux-kontext-pro"),
        ([], {"FLUX_EDIT_MODEL": "someone/else"}, "unknown model"),
        ([], {"FLUX_IMAGE_DIRS": "/abs:photos"}, "relative path 'photos'"),
        (["--image-dir", "photos"], {}, "--image-dir"),
        ([], {"FLUX_MCP_MAX_IMAGE_BYTES": "0"}, "FLUX_MCP_MAX_IMAGE_BYTES"),
        ([], {"FLUX_MCP_MAX_IMAGE_BYTES": "10MB"}, "number of bytes"),
    ],
)
def test_refusals_say_what_to_change(argv: list[str], env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(argv, env)


def test_edit_model_image_folders_and_size_cap(tmp_path: Path) -> None:
    default = load_config([], {})
    assert default.edit_model == "black-forest-labs/flux-kontext-pro"
    assert default.image_dirs == () and default.max_image_bytes == 10 * 1024 * 1024
    env = {
        "FLUX_EDIT_MODEL": "flux-dev",
        "FLUX_IMAGE_DIRS": os.pathsep.join([str(tmp_path / "a"), str(tmp_path / "b")]),
        "FLUX_MCP_MAX_IMAGE_BYTES": "5000",
    }
    config = load_config([], env)
    assert config.edit_model == "black-forest-labs/flux-dev"
    assert config.image_dirs == (tmp_path / "a", tmp_path / "b")
    assert config.max_image_bytes == 5000
    flagged = load_config(
        [
            "--edit-model",
            "black-forest-labs/flux-kontext-pro",
            "--image-dir",
            str(tmp_path / "c"),
            "--max-image-bytes",
            "7",
        ],
        env,
    )
    assert flagged.edit_model == "black-forest-labs/flux-kontext-pro"
    assert flagged.image_dirs == (tmp_path / "c",)
    assert flagged.max_image_bytes == 7


def test_an_edit_model_that_cannot_edit_stops_the_server(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLUX_", "REPLICATE_"))}
    done = subprocess.run(
        [sys.executable, "-m", "mcp_server"],
        env={**env, "FLUX_EDIT_MODEL": "flux-schnell", "FLUX_OUTPUT_DIR": str(tmp_path)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2
    assert "FLUX_EDIT_MODEL" in done.stderr and "does not edit images" in done.stderr
    assert "flux-kontext-pro" in done.stderr
    assert done.stdout == ""


def test_a_relative_output_dir_stops_the_server_with_a_clear_message(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLUX_", "REPLICATE_"))}
    done = subprocess.run(
        [sys.executable, "-m", "mcp_server"],
        env={**env, "FLUX_OUTPUT_DIR": "flux-images"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2
    assert "FLUX_OUTPUT_DIR" in done.stderr and "absolute path" in done.stderr
    assert done.stdout == ""  # stdout is the protocol
    assert not (tmp_path / "flux-images").exists()


CONFIGS = Path(__file__).parents[2] / "examples" / "mcp_configs"
READ_BY_THE_SERVER = {
    "FLUX_API_TOKEN",
    "REPLICATE_API_TOKEN",
    "FLUX_OUTPUT_DIR",
    "FLUX_BASE_URL",
    "FLUX_MODEL",
    "FLUX_EDIT_MODEL",
    "FLUX_IMAGE_DIRS",
    "FLUX_MCP_WAIT_SECONDS",
    "FLUX_MCP_PREVIEW",
    "FLUX_MCP_MAX_IMAGE_BYTES",
}


@pytest.mark.parametrize(
    "name", ["claude_desktop_config.json", "cursor_mcp.json", "vscode_mcp.json"]
)
def test_example_client_configs_start_this_server(name: str) -> None:
    import json

    config = json.loads((CONFIGS / name).read_text())
    [server] = (config.get("mcpServers") or config["servers"]).values()
    assert Path(server["command"]).name == "flux-mcp"
    assert set(server["env"]) <= READ_BY_THE_SERVER
    assert "FLUX_API_TOKEN" in server["env"]
    output_dir = server["env"].get("FLUX_OUTPUT_DIR")
    assert output_dir is None or Path(output_dir).is_absolute()


def test_the_offline_example_runs(tmp_path: Path) -> None:
    example = Path(__file__).parents[2] / "examples" / "mcp_client.py"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLUX_", "REPLICATE_"))}
    done = subprocess.run(
        [sys.executable, str(example), "--keep", str(tmp_path / "out")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("Saved to: ") == 3
    assert "FLUX Pro: processing" in done.stdout
    assert "FLUX Kontext Pro: processing" in done.stdout
    assert "Edited image with black-forest-labs/flux-kontext-pro" in done.stdout
    assert "edit_image uses black-forest-labs/flux-kontext-pro" in done.stdout
    assert "still processing" in done.stdout and "steps" in done.stdout
    assert len(list((tmp_path / "out").glob("*.webp"))) == 2
    assert len(list((tmp_path / "out").glob("*.png"))) == 1


def test_the_help_names_every_setting_of_the_core_and_the_server() -> None:
    import flux_tools
    from mcp_server import config

    done = subprocess.run(
        [sys.executable, "-m", "mcp_server", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"COLUMNS": "400", **{k: v for k, v in os.environ.items() if k != "COLUMNS"}},
    )
    assert done.returncode == 0
    help_text = " ".join(done.stdout.split())
    for var in (*flux_tools.ENVIRONMENT, *config.ENVIRONMENT):
        assert var.name in help_text, var.name
    assert {v.name for v in config.ENVIRONMENT} >= READ_BY_THE_SERVER - {
        v.name for v in flux_tools.ENVIRONMENT
    }


def test_the_core_settings_are_the_clients_and_flags_replace_image_folders(tmp_path: Path) -> None:
    env = {
        "REPLICATE_BASE_URL": "https://api.replicate.com",  # the official client's origin form
        "FLUX_IMAGE_DIRS": str(tmp_path / "env"),
        "FLUX_API_TOKEN": "r8_settings",
    }
    config = load_config([], env)
    assert config.settings.base_url == config.base_url == "https://api.replicate.com/v1"
    assert config.settings.token == "r8_settings" and "r8_settings" not in repr(config.settings)
    assert config.image_dirs == (tmp_path / "env",)
    flagged = load_config(["--image-dir", str(tmp_path / "flag")], env)
    assert flagged.image_dirs == (tmp_path / "flag",)  # flags narrow, not add to, the env's


def test_folders_as_a_desktop_bundle_passes_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bundle/manifest.json: the image folders expand into several arguments after one
    ``--image-dir`` (none when none is chosen), and the output folder's default is
    ``${HOME}/Pictures/flux-tools``, which the MCPB library passes on unexpanded."""
    monkeypatch.setenv("HOME", str(tmp_path))
    env = {"FLUX_OUTPUT_DIR": "${HOME}/Pictures/flux-tools", "FLUX_IMAGE_DIRS": "/from/env"}
    folders = [str(tmp_path / "photos"), str(tmp_path / "my pictures")]
    config = load_config(["--image-dir", *folders], env)
    assert config.image_dirs == tuple(map(Path, folders))
    assert config.output_dir == tmp_path / "Pictures" / "flux-tools"
    assert load_config(["--image-dir"], env).image_dirs == (Path("/from/env"),)
    assert load_config(["--image-dir", ""], {}).image_dirs == ()
    with pytest.raises(ConfigError, match="relative path"):
        load_config(["--image-dir", "${user_config.image_dirs}"], {})
