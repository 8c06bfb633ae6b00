"""The options' shared number check (scripts/io/options.py ``check_number``): what it accepts and its one line."""

import pytest

from scripts.io.errors import InputError
from scripts.io.options import check_number, check_optional_numbers


def test_a_number_comes_back_as_the_type_the_option_wants():
    assert check_number(3, "--n", integer=True) == 3 and type(check_number(3, "--n", integer=True)) is int
    assert check_number(2, "--x") == 2.0 and type(check_number(2, "--x")) is float
    assert check_number(0, "--x") == 0.0  # >= 0 by default
    assert check_number(1, "--n", minimum=1, integer=True) == 1


@pytest.mark.parametrize(
    "value, kwargs, message",
    [
        (0, {"strict": True}, "--x must be a number > 0, got 0"),
        (-0.5, {"note": "mm"}, "--x must be a number >= 0 (mm), got -0.5"),
        (
            1.5,
            {"integer": True, "unit": " of voxels", "note": "0: none"},
            "--x must be a whole number of voxels >= 0 (0: none), got 1.5",
        ),
        (True, {}, "--x must be a number >= 0, got True"),  # the command line's true is no number
        ("2", {}, "--x must be a number >= 0, got '2'"),
        (0, {"minimum": 1, "integer": True}, "--x must be a whole number >= 1, got 0"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_option_and_the_rule(value, kwargs, message):
    with pytest.raises(InputError) as err:
        check_number(value, "--x", **kwargs)
    assert str(err.value) == message


def test_a_number_or_null_comes_back_as_a_float_or_none_and_anything_else_is_one_line():
    """``check_optional_numbers`` (the regions' HU rules, bundle 0.9.23): ints and floats as floats, negative ones
    too, None and the command line's "null" / "None" as None; a bool (the command line's true), a string or a list
    is one :class:`InputError` naming the option."""
    given = {"bone_hu": 100, "unlabelled_air_hu": -400.5, "bone_trim_hu": "null", "unlabelled_bone_hu": None}
    assert check_optional_numbers(given, "HU") == {
        "bone_hu": 100.0,
        "unlabelled_air_hu": -400.5,
        "bone_trim_hu": None,
        "unlabelled_bone_hu": None,
    }
    for bad in (True, "200 HU", [200]):
        with pytest.raises(InputError, match=r"^--bone_hu must be a number or null \(HU; null: off\), got "):
            check_optional_numbers({"bone_trim_hu": 0, "bone_hu": bad}, "HU; null: off")
