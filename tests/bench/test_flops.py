"""FLOPs: the paper's numbers, the count with text, and the command line."""

import json

import pytest

from llava.bench.flops import flops_report, layer_flops, main, tokens_per_layer
from llava.pdrop import PDropConfig

DEFAULT = PDropConfig([8, 16, 24], [0.5, 0.25, 0.125])


@pytest.mark.parametrize("preset, no_drop, pdrop", [("llava-1.5-7b", 3.82, 1.78), ("llava-next-7b", 20.8, 9.46)])
def test_paper_counts_are_reproduced(preset, no_drop, pdrop):
    report = flops_report(preset, DEFAULT)
    assert round(report.paper_tflops_no_drop, 1 if no_drop > 10 else 2) == no_drop
    assert round(report.paper_tflops_pdrop, 2) == pdrop
    assert report.full_tflops_pdrop > report.paper_tflops_pdrop  # text tokens are counted and never dropped


def test_tokens_per_layer_and_layer_formula():
    counts = tokens_per_layer(32, 576, 10, DEFAULT)
    assert counts == [586] * 8 + [298] * 8 + [154] * 8 + [82] * 8
    assert layer_flops(2, 3, 5) == 4 * 2 * 9 + 2 * 4 * 3 + 3 * 2 * 3 * 5


def test_cli_prints_json_and_table(capsys):
    main(["--preset", "llava-1.5-7b", "--layer_list", "[8,16,24]", "--image_token_ratio_list", "[0.5,0.25,0.125]", "--json", "-"])
    data = json.loads(capsys.readouterr().out)
    assert data["schedule"]["layer_list"] == [8, 16, 24] and round(data["paper_tflops_pdrop"], 2) == 1.78
    main(["--preset", "llava-next-7b", "--lambda", "0.5", "--stages", "4", "--text_tokens", "0", "--position_mode", "original"])
    assert "20.83" in capsys.readouterr().out
    main(["--preset", "tiny-llava", "--image_tokens", "32"])
    assert "32 image tokens" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--layer_list", "[8,16,40]", "--image_token_ratio_list", "[0.5,0.25,0.125]"], "boundary 40"),
        (["--layer_list", "[8,16]"], "must be given together"),
        (["--lambda", "0.5", "--layer_list", "[8]", "--image_token_ratio_list", "[0.5]"], "not both"),
        (["--preset", "llava-99b"], "no model config 'llava-99b'"),
    ],
)
def test_cli_errors_name_the_problem(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("preset, layers", [("llava-next-7b-9crops", 32), ("llava-qwen2-7b", 28)])
def test_more_presets(preset, layers, capsys):
    report = main(["--preset", preset, "--json", "-"])
    assert report.schedule["layer_list"] == [layers // 4, layers // 2, 3 * layers // 4]
    assert 0.4 < report.paper_ratio < 0.5
