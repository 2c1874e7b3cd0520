"""README stays true to the code: every setting and every mapping option is documented."""

import re

import yaml

from segment_profiles_pipeline.config import MappingConfig
from segment_profiles_pipeline.settings import ENVIRONMENT, PROJECT_ROOT
from segment_profiles_pipeline.traits.config import TraitConfig

README = (PROJECT_ROOT / "README.md").read_text()


def test_every_environment_variable_is_in_the_configuration_table() -> None:
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", README, flags=re.M))
    assert set(ENVIRONMENT) <= documented


def test_every_mapping_option_is_in_the_complete_example() -> None:
    example = README.split("## Mappings", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    keys = set(re.findall(r"^\s+-? ?(\w+):", example, flags=re.M))
    assert set(MappingConfig.model_fields) <= keys


def test_the_trait_example_is_a_valid_trait() -> None:
    example = README.split("## Computed traits", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    (trait,) = yaml.safe_load(example)["traits"]
    parsed = TraitConfig.model_validate(trait)
    assert (parsed.key, parsed.type) == ("negative_completions_last_30_days", "event_counter")
