"""The plugin system: each test builds a fresh PluginManager with inline plugins."""

import re
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

import msagent
from msagent.errors import DuplicateRegistration, PluginError, PluginNotFound
from msagent.plugins import Registry, hookspecs, make_plugin_manager


# A registration target only (never decodes), so not one of msagent.testing's stand-ins.
class Toy(msagent.Segmenter):
    def encode_image(self, image):
        return image

    def decode_prompts(self, embedding, prompt_sets, prev_logits, *, multimask):
        raise NotImplementedError


def registry_with(*plugins) -> Registry:
    pm = make_plugin_manager(load_entrypoints=False)
    for index, plugin in enumerate(plugins):
        pm.register(plugin, name=f"inline{index}")
    return Registry(pm)


class SegPlugin:
    @staticmethod
    @msagent.hookimpl
    def msagent_register_segmenters(register):
        register("toy", Toy, "a toy")


def test_inline_plugin_registers_and_loads_lazily():
    calls = []

    class LazyPlugin:
        @staticmethod
        @msagent.hookimpl
        def msagent_register_segmenters(register):
            def factory(**options):
                calls.append(options)
                return Toy()
            register("lazy-toy", factory)

    registry = registry_with(LazyPlugin)
    assert "lazy-toy" in registry.registrations("segmenter")
    assert calls == []  # listing does not build
    segmenter = registry.load("segmenter", "lazy-toy", cache_size=3)
    assert isinstance(segmenter, Toy) and segmenter.name == "lazy-toy"
    assert calls == [{"cache_size": 3}]


def test_builtin_policies_and_reward_register_through_the_hooks():
    registry = registry_with()
    assert {"expert", "oracle-box"} <= set(registry.registrations("policy"))
    assert registry.get("reward", "medsam").package == "msagent"


def test_duplicate_names_raise_naming_both_plugins():
    class Other:
        @staticmethod
        @msagent.hookimpl
        def msagent_register_segmenters(register):
            register("toy", Toy)

    registry = registry_with(SegPlugin, Other)
    with pytest.raises(DuplicateRegistration) as info:
        registry.registrations("segmenter")
    assert "inline0" in str(info.value) and "inline1" in str(info.value)


def test_wrong_base_class_is_refused_at_registration():
    class Bad:
        @staticmethod
        @msagent.hookimpl
        def msagent_register_policies(register):
            register("bad", Toy)  # a Segmenter registered as a policy

    with pytest.raises(PluginError, match="does not subclass Policy"):
        registry_with(Bad).registrations("policy")


def test_factory_returning_the_wrong_type_is_refused_at_load():
    class Bad:
        @staticmethod
        @msagent.hookimpl
        def msagent_register_segmenters(register):
            register("liar", lambda **kw: object())

    with pytest.raises(PluginError, match="not a Segmenter"):
        registry_with(Bad).load("segmenter", "liar")


def test_unknown_name_lists_what_is_installed_and_which_package_provides_it():
    registry = registry_with(SegPlugin)
    with pytest.raises(PluginNotFound) as info:
        registry.get("segmenter", "medsam2")
    message = str(info.value)
    assert "toy" in message and "pip install msagent-medsam2" in message
    assert isinstance(info.value, LookupError) and not isinstance(info.value, KeyError)


def test_third_party_package_is_discovered_through_its_entry_point():
    """tests/fixtures/msagent-example-plugin is pip-installed into the test environment."""
    registration = Registry(make_plugin_manager()).get("segmenter", "mybackbone")
    assert registration.package == "msagent-example-plugin"
    assert registration.plugin == "mybackbone"


def test_msagent_load_plugins_limits_entry_points(monkeypatch):
    monkeypatch.setenv("MSAGENT_LOAD_PLUGINS", "mybackbone")
    names = set(Registry(make_plugin_manager()).registrations("segmenter"))
    assert "mybackbone" in names and "litemedsam" not in names
    monkeypatch.setenv("MSAGENT_LOAD_PLUGINS", "")
    left = Registry(make_plugin_manager()).registrations("segmenter").values()
    assert {r.package for r in left} <= {"msagent"}  # only the built-in plugin loads


def test_import_and_listing_plugins_import_no_torch():
    code = textwrap.dedent("""
        import sys, msagent
        from msagent.cli import main
        main(["plugins"])
        msagent.list_backbones(); msagent.list_policies()
        heavy = [m for m in ("torch", "transformers", "openai", "ray") if m in sys.modules]
        assert not heavy, heavy
    """)
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


DOCS = Path(__file__).resolve().parents[2] / "docs" / "writing-a-plugin.md"


def _documented_signatures() -> dict[str, str]:
    """``### name(args)`` headings of docs/writing-a-plugin.md, name -> args."""
    found = re.findall(r"^#{2,4} (msagent_\w+)\(([^)]*)\)\s*$", DOCS.read_text(), re.MULTILINE)
    return dict(found)


def test_every_hook_has_a_test_and_a_documented_signature():
    """datasette's rule: each hookspec has a test_hook_<name> here and a docs section whose
    signature is the spec's own (pm.hook.<name>.spec.argnames)."""
    pm = make_plugin_manager(load_entrypoints=False)
    specs = [name for name in dir(pm.hook) if name.startswith("msagent_")]
    assert len(specs) == 4
    assert specs == sorted(n for n in dir(hookspecs) if n.startswith("msagent_register_"))
    documented = _documented_signatures()
    for name in specs:
        assert callable(globals().get(f"test_hook_{name}")), f"no test_hook_{name} in {__file__}"
        argnames = ", ".join(getattr(pm.hook, name).spec.argnames)
        assert documented.get(name) == argnames, (
            f"docs/writing-a-plugin.md needs a section '### {name}({argnames})'")
        assert ":param register:" in (getattr(hookspecs, name).__doc__ or ""), name
    assert set(documented) == set(specs), "documented hooks that no longer exist"


def test_the_documented_backbone_and_policy_skeletons_work(phantom):
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.DOTALL)
    namespace: dict = {}
    for block in blocks:
        if "@msagent.hookimpl" in block:
            exec(compile(block, str(DOCS), "exec"), namespace)
    plugin = types.SimpleNamespace(**{k: v for k, v in namespace.items() if k.startswith("msagent_")})
    registry = registry_with(plugin)
    backbone = registry.load("segmenter", "mybackbone", threshold=10)
    assert backbone.threshold == 10 and backbone.cache_info().maxsize == 16  # super().__init__()
    policy = registry.load("policy", "mypolicy")
    assert "temperature" in policy.client_options
    image, gt = phantom
    trajectory = msagent.Agent(policy, backbone, max_turns=3).run(image, "blob", gt)
    assert trajectory.final_mask.shape == gt.shape and trajectory.final_mask.any()


def test_hook_msagent_register_segmenters():
    registry = registry_with(SegPlugin)
    registration = registry.get("segmenter", "toy")
    assert registration.plugin == "inline0" and registration.description == "a toy"
    assert registry.get("backbone", "toy") is registration
    assert isinstance(registry.load("segmenter", "toy"), msagent.Segmenter)


def test_hook_msagent_register_policies():
    class Stop(msagent.Policy):
        def act(self, episode):
            return msagent.Reply('<tool_call>{"name": "stop", "arguments": {}}</tool_call>')

    class PolicyPlugin:
        @staticmethod
        @msagent.hookimpl
        def msagent_register_policies(register):
            register("stop-now", Stop, "stops at once")

    registry = registry_with(PolicyPlugin)
    assert registry.get("policy", "stop-now").description == "stops at once"
    assert isinstance(registry.load("policy", "stop-now"), msagent.Policy)


def test_hook_msagent_register_rewards():
    registry = registry_with(AllKinds)
    assert registry.get("reward", "zero").plugin == "inline0"
    assert isinstance(registry.load("reward", "zero"), msagent.Reward)


def test_hook_msagent_register_trajectory_generators():
    registry = registry_with(AllKinds)
    generator = registry.load("trajectory_generator", "nothing")
    assert isinstance(generator, msagent.TrajectoryGenerator)
    assert list(generator.generate(None, None)) == []


class AllKinds:
    @staticmethod
    @msagent.hookimpl
    def msagent_register_rewards(register):
        register("zero", msagent.MedSAMReward)

    @staticmethod
    @msagent.hookimpl
    def msagent_register_trajectory_generators(register):
        class Gen(msagent.TrajectoryGenerator):
            def generate(self, case, segmenter):
                yield from ()
        register("nothing", Gen)


def test_rewards_and_trajectory_generators_register_too():
    registry = registry_with(AllKinds)
    assert isinstance(registry.load("reward", "zero"), msagent.Reward)
    assert list(registry.load("trajectory_generator", "nothing").generate(None, None)) == []


class Broken:
    @staticmethod
    @msagent.hookimpl
    def msagent_register_segmenters(register):
        register("half", Toy)
        raise RuntimeError("weights folder missing")

    @staticmethod
    @msagent.hookimpl
    def msagent_register_policies(register):
        raise ImportError("no module named 'openai'")


def test_each_kind_is_collected_on_its_own_first_use():
    calls = []

    class Counting:
        @staticmethod
        @msagent.hookimpl
        def msagent_register_segmenters(register):
            calls.append("segmenter")

        @staticmethod
        @msagent.hookimpl
        def msagent_register_policies(register):
            calls.append("policy")

    registry = registry_with(Counting)
    registry.registrations("policy")
    registry.registrations("policy")
    assert calls == ["policy"]
    registry.registrations("backbone")  # the user-facing word for the segmenter kind
    assert calls == ["policy", "segmenter"]


def test_a_raising_hook_is_a_plugin_error_naming_plugin_and_hook_and_hides_nothing_else():
    registry = registry_with(SegPlugin, Broken)
    with pytest.warns(msagent.errors.PluginWarning, match="inline1.*msagent_register_policies"):
        policies = registry.registrations("policy")
    assert {"expert", "oracle-box"} <= set(policies)  # the built-in plugin still lists
    with pytest.warns(msagent.errors.PluginWarning, match="RuntimeError.*weights folder missing"):
        assert set(registry.registrations("segmenter")) == {"remote", "toy"}  # "half" dropped
    with pytest.raises(PluginError) as info:
        registry.get("segmenter", "half")  # it would have been provided by the broken plugin
    message = str(info.value)
    assert "'inline1'" in message and "msagent_register_segmenters" in message
    assert isinstance(info.value.__cause__, RuntimeError)
    with pytest.raises(PluginNotFound, match="Plugin 'inline1'.*may provide it"):
        registry.get("segmenter", "other")


def test_a_broken_entry_point_is_reported_and_the_others_load(monkeypatch):
    from importlib import metadata

    real = list(metadata.entry_points(group="msagent"))
    broken = metadata.EntryPoint(name="broken", value="msagent_no_such_module", group="msagent")
    monkeypatch.setattr(metadata, "entry_points", lambda **kw: [*real, broken])
    monkeypatch.setenv("MSAGENT_LOAD_PLUGINS", "mybackbone,broken")
    with pytest.warns(msagent.errors.PluginWarning, match="'broken'.*ModuleNotFoundError"):
        registry = Registry(make_plugin_manager())
    assert "mybackbone" in registry.registrations("segmenter")
    with pytest.raises(PluginError, match="provided by plugin 'broken'"):
        registry.get("segmenter", "broken")


def test_unknown_names_in_msagent_load_plugins_warn_with_the_installed_ones(monkeypatch):
    monkeypatch.setenv("MSAGENT_LOAD_PLUGINS", "mybackbone,mybackbon")
    with pytest.warns(msagent.errors.PluginWarning, match="'mybackbon'.*installed entry points:.*mybackbone"):
        registry = Registry(make_plugin_manager())
    assert "mybackbone" in registry.registrations("segmenter")


def test_a_plugin_left_out_by_msagent_load_plugins_is_not_said_to_be_missing(monkeypatch):
    monkeypatch.setenv("MSAGENT_LOAD_PLUGINS", "mybackbone")
    registry = Registry(make_plugin_manager())
    with pytest.raises(PluginNotFound) as info:
        registry.get("segmenter", "litemedsam")  # installed in the test environment
    message = str(info.value)
    assert "installed but left out by MSAGENT_LOAD_PLUGINS" in message
    assert "pip install" not in message


def test_install_hints_name_the_clone_folder_only_in_a_clone(monkeypatch, tmp_path):
    registry = registry_with()
    with pytest.raises(PluginNotFound, match=r"pip install \./plugins/msagent-sam|plugins/msagent-sam\)"):
        registry.get("segmenter", "sam")
    monkeypatch.setattr(msagent.plugins.messages, "_SOURCE_ROOT", tmp_path)  # an installed copy
    with pytest.raises(PluginNotFound) as info:
        registry.get("segmenter", "sam")
    assert "pip install msagent-sam." in str(info.value) and "plugins/" not in str(info.value)


def test_backbone_is_the_user_facing_word_with_one_function_per_operation():
    assert not hasattr(msagent, "load_segmenter") and not hasattr(msagent, "list_segmenters")
    assert "mybackbone" in msagent.list_backbones()
    assert isinstance(msagent.load_backbone("mybackbone"), msagent.Segmenter)
    with pytest.raises(PluginNotFound, match="no backbone named 'nope'"):
        msagent.load_backbone("nope")
