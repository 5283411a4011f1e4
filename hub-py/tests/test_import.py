"""The package imports and its compiled half answers."""

import commandcenter_hub


def test_version_is_exposed() -> None:
    assert commandcenter_hub.__version__.count(".") == 2


def test_slugify_uses_the_core_rules() -> None:
    assert commandcenter_hub.slugify("  My App!! 2.0 ") == "my-app-2-0"
    assert commandcenter_hub.slugify("日本語") == "ri-ben-yu"
    assert commandcenter_hub.slugify("!!!").startswith("project-")
