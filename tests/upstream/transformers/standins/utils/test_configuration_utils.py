"""Stand-in: the transformers sdist does not ship `tests/utils/test_configuration_utils.py`.

`ConfigTester.check_config_arguments_init`, its only reader, returns before using it for composite configs (those
with `sub_configs`), which LaVIN's and LLaVA's are.
"""

config_common_kwargs: dict = {}
