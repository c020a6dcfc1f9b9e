"""--json output is strict JSON: NaN and infinities (e.g. an accuracy nobody could measure) become null."""
import json
import math

from mdl.cli._output import emit_json


def test_emit_json_is_strict(capsys):
    emit_json({"accuracy": math.nan, "scores": [1.5, math.inf, -math.inf], "nested": {"p": (math.nan, 2)}})
    parsed = json.loads(capsys.readouterr().out, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    assert parsed == {"accuracy": None, "scores": [1.5, None, None], "nested": {"p": [None, 2]}}
