"""``gritkit serve``'s flags and ServeConfig agree: each field has a flag with the field's default,
or is named here as deliberately different, so a field or default changed in one place fails."""

from __future__ import annotations

import dataclasses

import pytest

from gritkit.cli import build_parser, main
from gritkit.commands.serve import CONFIG_FLAGS, serve_config
from gritkit.serve import ServeConfig

NOT_FLAGS = {"batch_wait_s"}  # a tuning knob for tests and benchmarks
OTHER_DEFAULTS = {"model_name": None}  # --model-name: None means the model directory's name


def parse(*argv: str):
    return build_parser()[0].parse_args(["serve", *argv])


def test_every_field_is_a_flag_with_the_fields_default_or_named_here():
    parsed = vars(parse())
    for field in dataclasses.fields(ServeConfig):
        if field.name in NOT_FLAGS:
            assert field.name not in parsed, f"{field.name} is a flag: take it out of NOT_FLAGS"
            continue
        assert field.name in parsed, f"ServeConfig.{field.name} has no flag (dest {field.name!r}) nor is in NOT_FLAGS"
        assert parsed[field.name] == OTHER_DEFAULTS.get(field.name, field.default), field.name


def test_no_flags_give_the_default_config_named_after_the_model_directory(tmp_path):
    assert serve_config(parse("--model", str(tmp_path / "my-model"))) == ServeConfig(model_name="my-model")


def test_every_config_flag_reaches_the_config(tmp_path):
    values = {"api_key": "key", "query_instruction": "Find", "document_instruction": "Doc"}
    argv = ["--model", str(tmp_path), "--model-name", "named"]
    for name, (flag, _) in CONFIG_FLAGS.items():
        values.setdefault(name, 1000 + len(argv))  # an int unlike any default
        argv += [flag, str(values[name])]
    assert serve_config(parse(*argv)) == ServeConfig(model_name="named", **values)


@pytest.mark.parametrize("flag", [flag for name, (flag, _) in CONFIG_FLAGS.items()
                                  if isinstance(getattr(ServeConfig, name), int)])
def test_a_count_or_size_below_one_is_refused_by_its_flag_name(flag, tmp_path, capsys):
    assert main(["serve", "--model", str(tmp_path), flag, "0"]) == 2
    assert f"{flag} must be positive, got 0" in capsys.readouterr().err
