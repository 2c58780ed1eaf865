from transformers_lavin.cli_flags import UnderscoreArgumentParser, both_spellings


def test_both_spellings_are_accepted_and_help_shows_underscores():
    assert both_spellings("--max-new-tokens") == ["--max_new_tokens", "--max-new-tokens"]
    assert both_spellings("--seed") == ["--seed"] and both_spellings("-h") == ["-h"]
    parser = UnderscoreArgumentParser(prog="x")
    parser.add_argument("--max-new-tokens", type=int, default=1)
    parser.add_argument("--output_dir")
    args = parser.parse_args(["--max_new_tokens", "3", "--output-dir", "o"])
    assert (args.max_new_tokens, args.output_dir) == (3, "o")
    text = parser.format_help()
    assert "--max_new_tokens" in text and "--max-new-tokens" not in text and "--output-dir" not in text


def test_every_script_takes_underscores_and_the_old_hyphens_also_in_argument_groups():
    from transformers_lavin.conversion.cli import build_parser as convert_parser
    from transformers_lavin.evaluation.cli import build_parser as eval_parser

    base = ["--model", "m.py:f", "--task", "pope=data"]
    for judge_flag, dir_flag in (("--judge_url", "--output_dir"), ("--judge-url", "--output-dir")):
        args = eval_parser().parse_args([*base, judge_flag, "http://127.0.0.1:9/v1", dir_flag, "out"])
        assert (args.judge_url, args.output_dir) == ("http://127.0.0.1:9/v1", "out")
    assert "--judge-url" not in eval_parser().format_help() and "--judge_url" in eval_parser().format_help()
    convert = convert_parser()
    for flag in ("--base_dir", "--base-dir"):
        parsed = convert.parse_args(["import", "--checkpoint", "c.pth", "--llama", "l", "--clip", "c", flag, "b"])
        assert parsed.base_dir == "b"
