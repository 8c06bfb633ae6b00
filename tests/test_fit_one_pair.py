"""benchmarks/fit_one_pair.py: the capacity check trains a config's network on one generated pair."""

from benchmarks.fit_one_pair import main

SMALL = '{"image_size": [32, 32, 16], "channels": [4, 8, 16], "strides": [2, 2], "learning_rate": 0.01}'


def test_a_small_network_fits_one_generated_pair_and_the_last_line_says_so(capsys):
    result = main(["--override", SMALL, "--iterations", "40", "--every", "20", "--threads", "1"])
    (_, start), (_, end) = result["curve"][0], result["curve"][-1]
    assert [it for it, _ in result["curve"]] == [0, 20, 40]
    # measured: 9.37 -> 2.20 and 9.40 -> 1.95 mm in two runs, none 5.43
    assert end < 0.5 * result["none"] and end < 0.5 * start, result
    last = capsys.readouterr().out.strip().splitlines()[-1].split()
    assert last[:2] == ["FIT", "40"] and float(last[3]) == round(end, 3)
