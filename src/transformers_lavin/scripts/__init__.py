"""Console scripts: `lavin-train` (`sft.main`, fine-tuning with TRL) and `lavin-demo` (`demo.main`, the offline demo)."""
