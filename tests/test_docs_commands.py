"""Every `ssl-hf` command shown in README.md and docs/ parses: the flags the docs name exist (nothing is trained)."""

import re
import shlex
from pathlib import Path

import pytest

from ssl_hf import cli


ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


class Parsed(BaseException):
    """Raised once argparse has accepted a command line (a BaseException, so the CLI's error handling lets it by)."""


def _commands() -> list[tuple[str, list[str]]]:
    """(page: line, argv) of every `ssl-hf ...` or `... examples/pretrain.py ...` line in the pages' shell blocks."""
    found = []
    for page in PAGES:
        blocks = re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.DOTALL)
        for block in blocks:
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split(" #")[0].strip()
                if "..." in line or "[" in line:  # a pattern, not a command
                    continue
                line = re.sub(r"<[^>]+>", "placeholder", line)  # `--dataset <hub id or folder>`
                words = shlex.split(line)
                if words[:1] == ["ssl-hf"] and len(words) > 1 and words[1] != "--help":
                    found.append((f"{page.name}: {line}", words[1:]))
                elif "examples/pretrain.py" in words:
                    found.append(
                        (f"{page.name}: {line}", ["pretrain", *words[words.index("examples/pretrain.py") + 1 :]])
                    )
    return found


COMMANDS = _commands()


def test_the_docs_show_commands():
    assert {argv[0] for _, argv in COMMANDS} >= {"pretrain", "export", "evaluate", "push", "convert"}


@pytest.mark.parametrize("argv", [argv for _, argv in COMMANDS], ids=[name for name, _ in COMMANDS])
def test_documented_command_parses(argv, no_training, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # pretrain's stub writes nothing, but relative paths stay in the tmp dir
    if argv[0] == "pretrain":
        for i, word in enumerate(argv):  # example configs are given relative to the repository
            if word.endswith(".yaml"):
                argv[i] = str(ROOT / word)
        cli.main(argv)
        assert no_training, "the documented pretrain command did not reach the training loop"
        return
    original = cli.argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        original(self, args, namespace)
        raise Parsed

    monkeypatch.setattr(cli.argparse.ArgumentParser, "parse_args", parse_then_stop)
    with pytest.raises(Parsed):
        cli.main(argv)


# flags of other tools the pages show: accelerate, torchrun, ruff, benchmarks/*.py
OTHER_TOOLS = {"check", "cpu", "fix", "machine_rank", "main_process_ip", "multi_gpu", "nproc_per_node"}
OTHER_TOOLS |= {"num_machines", "num_processes", "use_deepspeed", "use_fsdp", "extra", "group", "models"}


def _cli_flags() -> set[str]:
    """Every flag of every `ssl-hf` command, for every method and backbone family."""
    import ssl_hf
    from ssl_hf.training.arguments import TRAINING_FIELDS

    flags = {*TRAINING_FIELDS, "method", "config", "preset", "backbone", "help", "version"}  # ssl-hf --version
    for spec in ssl_hf.METHODS.values():
        for backbone in ("vit-base", "resnet-18"):
            method_fields, backbone_fields = cli._method_fields(spec, backbone)
            flags |= set(method_fields) | set(backbone_fields)
    return flags


def test_every_flag_the_docs_name_exists(monkeypatch):
    flags = _cli_flags()

    def collect(self, args=None, namespace=None):
        flags.update(option.lstrip("-") for option in self._option_string_actions)
        raise Parsed

    monkeypatch.setattr(cli.argparse.ArgumentParser, "parse_args", collect)
    convert = ["convert", "x", "--from", "mae", "--output_dir", "y"]
    for argv in (["export", "x", "--output_dir", "y"], ["evaluate", "x"], ["push", "x", "--repo_id", "a/b"], convert):
        with pytest.raises(Parsed):
            cli.main(argv)
    unknown = {
        f"{page.name}: --{flag}"
        for page in PAGES
        for flag in re.findall(r"(?<![\w#-])--([a-z][a-z0-9_-]*)", page.read_text())
        if flag not in flags | OTHER_TOOLS
    }
    assert not unknown, f"flags named in the docs that no ssl-hf command has: {sorted(unknown)}"
