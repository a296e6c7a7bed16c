"""The benchmark scripts' shared argument types (benchmarks/ is on pytest's path)."""
from __future__ import annotations

import argparse

import pytest

from arguments import count_or_zero, counts_or_zero, positive_int, positive_ints, seed_range


@pytest.mark.parametrize("text, value", [("1", 1), ("512", 512)])
def test_positive_int_accepts_whole_numbers_from_one(text, value):
    assert positive_int(text) == value


@pytest.mark.parametrize("text", ["0", "-3", "1.5", "x", ""])
def test_positive_int_refuses_anything_else_with_a_message_naming_the_value(text):
    with pytest.raises(argparse.ArgumentTypeError, match=f"{text!r} is not a positive whole number"):
        positive_int(text)


def test_a_bad_count_is_one_argparse_error_line_not_a_traceback():
    parser = argparse.ArgumentParser(prog="train.py")
    parser.add_argument("--rounds", type=positive_int, default=2)
    with pytest.raises(SystemExit) as stopped:
        parser.parse_args(["--rounds", "0"])
    assert stopped.value.code == 2


@pytest.mark.parametrize("text, value", [("0", 0), ("4500", 4500)])
def test_count_or_zero_accepts_zero_for_its_own_meaning(text, value):
    assert count_or_zero(text) == value


@pytest.mark.parametrize("text", ["-5", "2.5", "all"])
def test_count_or_zero_refuses_negative_and_non_whole_values(text):
    with pytest.raises(argparse.ArgumentTypeError, match=f"{text!r} is not a whole number of 0 or more"):
        count_or_zero(text)


def test_positive_ints_reads_a_comma_separated_list_and_refuses_any_bad_member():
    assert positive_ints("500,1000") == [500, 1000]
    for text in ("0", "500,", "500,x"):
        with pytest.raises(argparse.ArgumentTypeError, match="comma-separated list of positive whole numbers"):
            positive_ints(text)


def test_counts_or_zero_reads_a_comma_separated_list_that_may_hold_zero():
    assert counts_or_zero("0,2,5") == [0, 2, 5]
    for text in ("-1", "0,", "2,x"):
        with pytest.raises(argparse.ArgumentTypeError, match="comma-separated list of whole numbers of 0 or more"):
            counts_or_zero(text)


@pytest.mark.parametrize("text, seeds", [("4", [4]), ("1-3", [1, 2, 3]), ("0-0", [0])])
def test_seed_range_reads_one_seed_or_an_inclusive_range(text, seeds):
    assert seed_range(text) == seeds


@pytest.mark.parametrize("text", ["5-1", "a-3", "1-", "-2", "1-2-3"])
def test_seed_range_refuses_empty_or_malformed_ranges(text):
    with pytest.raises(argparse.ArgumentTypeError, match="is not a seed or a range of seeds"):
        seed_range(text)


def test_clean_synthetic_checks_every_set_name_before_drawing_any_data():
    from clean_synthetic import style_sets

    assert style_sets("default,held-out") == ["default", "held-out"]
    with pytest.raises(argparse.ArgumentTypeError, match="unknown set 'nosuch'; known: default, tuning, held-out"):
        style_sets("default,nosuch")


def test_clean_synthetic_checks_every_row_count_against_the_generators_limit_before_drawing_any_data():
    from clean_synthetic import row_counts
    from marsseg.synthetic import MAX_IMAGES

    assert row_counts(f"500,{MAX_IMAGES}") == [500, MAX_IMAGES]
    with pytest.raises(argparse.ArgumentTypeError, match=f"{MAX_IMAGES + 1} rows is more than the generator draws"):
        row_counts(f"500,{MAX_IMAGES + 1}")
    with pytest.raises(argparse.ArgumentTypeError, match="not a comma-separated list of positive whole numbers"):
        row_counts("500,0")


def test_clean_synthetic_checks_the_test_row_count_against_the_generators_limit():
    from clean_synthetic import count_of_test_rows
    from marsseg.synthetic import MAX_IMAGES
    assert count_of_test_rows("0") == 0 and count_of_test_rows(str(MAX_IMAGES)) == MAX_IMAGES
    with pytest.raises(argparse.ArgumentTypeError, match=f"{MAX_IMAGES + 1} rows is more than the generator draws"):
        count_of_test_rows(str(MAX_IMAGES + 1))


def test_trust_refuses_one_fold_which_would_silently_skip_cross_validation():
    from trust import fold_count

    assert fold_count("0") == 0 and fold_count("3") == 3
    with pytest.raises(argparse.ArgumentTypeError, match="use 0 .no cross-validation. or at least 2"):
        fold_count("1")


@pytest.mark.parametrize("argv, message", [
    (["--set", "train.epochs"], "error: --set train.epochs: use KEY=VALUE"),
    (["--set", "train.epochs=0"], "error: params.yaml with configuration 'default': train.epochs is 0"),
    (["--configs", "default", "lovasz", "--set", "model.arch=nosuch"], "unknown architecture 'nosuch'"),
])
def test_quality_checks_every_configurations_params_before_copying_or_running_anything(argv, message, tmp_path,
                                                                                       capsys):
    import quality

    data, scratch = tmp_path / "data.npz", tmp_path / "scratch"
    data.write_bytes(b"")  # only its existence is looked at before the params are checked
    with pytest.raises(SystemExit) as stopped:
        quality.main([*argv, "--data", str(data), "--scratch", str(scratch)])
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err
    assert not scratch.exists()
