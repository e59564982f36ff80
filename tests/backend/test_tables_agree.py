"""The name tables agree: every name in the registry has a config class and the other way round, every
renderer a representation can choose is registered, and every preset names only things that exist."""

from __future__ import annotations

from dataclasses import fields

import pytest

from backend import config, presets, registry

FAMILIES = [("prior", registry.PRIORS, config.PRIOR_CONFIGS),
            ("method", registry.METHODS, config.METHOD_CONFIGS),
            ("representation", registry.REPRESENTATIONS, config.REPRESENTATION_CONFIGS)]


@pytest.mark.parametrize(("family", "impls", "configs"), FAMILIES, ids=[f[0] for f in FAMILIES])
def test_every_implementation_has_a_config_and_every_config_an_implementation(family, impls, configs):
    assert list(impls) == list(configs), family
    for name, cls in configs.items():
        assert cls().name == name, f"{family} {name}: its config's name is {cls().name!r}"
        impl = registry.resolve(impls, name)
        assert isinstance(impl, type), f"{family} {name} resolves to {impl!r}"


def test_the_stage_families_choose_from_the_same_tables():
    by_field = {f.name: f.metadata["table"] for f in fields(config.StageConfig) if f.metadata.get("family")}
    assert by_field == {family: configs for family, _, configs in FAMILIES}
    assert by_field == config.FAMILIES


def test_every_renderer_a_representation_may_choose_is_registered():
    allowed = {(rep, r) for rep, names in config.RENDERERS.items() for r in names}
    assert allowed == set(registry.RENDERERS)
    assert set(config.RENDERERS) == set(config.REPRESENTATION_CONFIGS)
    choices = next(f.metadata["choices"] for f in fields(config.StageConfig) if f.name == "renderer")
    assert {r for _, r in allowed} | {"auto"} == set(choices)
    for key in registry.RENDERERS:
        assert callable(getattr(registry.resolve(registry.RENDERERS, key), "render", None)), key


def test_every_conversion_between_stages_is_implemented():
    for before, after in config.CONVERSIONS:
        assert before in config.REPRESENTATION_CONFIGS and after in config.REPRESENTATION_CONFIGS
        assert hasattr(registry.resolve(registry.REPRESENTATIONS, after), "create_from"), after
    # The settings a continued field must keep are settings of both representations' configs.
    for name in config.FIELD_SETTINGS:
        assert hasattr(config.NeRFConfig(), name) and hasattr(config.DMTetConfig(), name), name


@pytest.mark.parametrize("name", presets.names())
def test_every_preset_names_what_exists(name):
    cfg = presets.get(name)
    assert cfg.preset == name
    for st in cfg.stages:
        assert st.prior.name in registry.PRIORS
        assert st.method.name in registry.METHODS
        assert st.representation.name in registry.REPRESENTATIONS
        assert st.renderer == "auto" or (st.representation.name, st.renderer) in registry.RENDERERS
        assert type(st.prior) is config.PRIOR_CONFIGS[st.prior.name]
        assert type(st.method) is config.METHOD_CONFIGS[st.method.name]
        assert type(st.representation) is config.REPRESENTATION_CONFIGS[st.representation.name]


def test_the_preset_table_is_complete_and_paired():
    names = presets.names()
    assert len(names) == len(set(names)) == 22
    assert names[0] == presets.DEFAULT_PRESET
    quick = {n for n in names if n.endswith("-quick")}
    full = set(names) - quick
    assert {f"{n}-quick" for n in full} == quick  # every paper's full preset beside its quick variant
    assert set(presets.REFERENCE_GUIDANCE) == full
    for n in names:
        assert presets.PRESETS[n].needs_gpu == (n in full)
