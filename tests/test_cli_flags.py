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
