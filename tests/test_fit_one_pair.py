"""benchmarks/fit_one_pair.py: the capacity check trains a config's network on one generated pair."""

from benchmarks.fit_one_pair import main

SMALL = '{"image_size": [32, 32, 16], "channels": [4, 8, 16], "strides": [2, 2], "learning_rate": 0.01}'


def test_a_small_network_fits_one_generated_pair_and_the_last_line_says_so(capsys):
    result = main(["--override", SMALL, "--iterations", "60", "--every", "30", "--threads", "1"])
    (_, start), (_, end) = result["curve"][0], result["curve"][-1]
    assert [it for it, _ in result["curve"]] == [0, 30, 60]
    # measured (bundle 0.9.6's preset: real-density bones, the pair aligned on its bones first; seeded, the same in
    # every run): 5.57 -> 1.60 mm, none 5.43
    assert end < 0.5 * result["none"] and end < 0.5 * start, result
    last = capsys.readouterr().out.strip().splitlines()[-1].split()
    assert last[:2] == ["FIT", "60"] and float(last[3]) == round(end, 3)
