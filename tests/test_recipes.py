"""Every recipe of the lineage runs end to end on the smoke profile and reports what it should.

Smoke models are too small to learn anything: these tests prove the code paths and the
bookkeeping (stages, caching, histories, compute counters), not the claims (see RESULTS.md).
"""
import pytest
import torch

from minimopd.recipes import RECIPES, run_recipe


def test_registry_lists_the_lineage():
    assert {"sft", "tulu3", "r1_zero", "r1", "grpo_vs_drgrpo"} <= set(RECIPES)
    with pytest.raises(ValueError, match="unknown recipe 'ppo9'; known recipes: sft"):
        run_recipe("ppo9", profile="smoke")


def test_tulu3_reasoning_sft_then_dpo_then_rlvr_on_selected_prompts(smoke_run):
    """Tülu 3: the reasoning SFT, length-normalised DPO on judged pairs (notes by the labeller,
    worked traces by the verifier; the SFT its reference and parent), then RLVR from the DPO
    model on the prompts it sometimes solves."""
    from minimopd.artifacts import sft_artifact
    sft = sft_artifact("smoke", reasoning=True, progress=False)
    run = smoke_run("tulu3")
    res = run.result
    assert list(res.evals) == ["sft", "dpo", "rlvr"]
    assert res.info["sft"]["path"] == str(sft.path)    # the shared reasoning SFT (cached or not, by test order)
    dpo = res.info["dpo"]
    assert dpo["parent"] == sft.path.name
    assert res.info["rlvr"]["parent"] == dpo["path"].rsplit("/", 1)[-1]
    assert any(not torch.equal(a, b) for a, b in zip(sft.model.parameters(), res.models["dpo"].parameters()))
    (row,) = res.tables["DPO pairs"]                # judged notes pairs and verified trace pairs, mixed
    assert row["notes pairs"] > 0 and row["verifiable pairs"] > 0
    assert dpo["pairs"] == row["notes pairs"] + row["verifiable pairs"]
    assert 0 <= row["notes chosen on-policy"] <= 1 and "KL to reference" in row
    stages = res.tables["notes and verifiable accuracy per stage"]
    assert [r["stage"] for r in stages] == ["sft", "dpo", "rlvr"]
    assert stages[2]["verifiable accuracy"] == round(res.evals["rlvr"].accuracy(), 3)
    assert all(0 <= r["notes gold (greedy)"] <= 1 for r in stages)
    rl_hist = res.histories["rlvr"]
    assert len(rl_hist) == 3 and {"reward", "accuracy", "kl", "clip_frac", "flops", "grad_norm"} <= set(rl_hist[-1])
    info = res.info["rlvr"]                      # RL drew only prompts the DPO model sometimes solves
    assert info["selection_candidates"] == 64 and 0 < info["selection_kept"] < 64
    # the selection's sampling is part of the stage's cost; the history counts the run alone
    assert info["rl_flops"] == pytest.approx(rl_hist[-1]["flops"])
    assert info["flops"] == pytest.approx(info["rl_flops"] + info["selection_flops"]) and info["selection_flops"] > 0
    assert info["tokens_generated"] == info["rl_tokens_generated"] + info["selection_tokens_generated"]
    assert info["wall_time"] == pytest.approx(info["rl_wall_time"] + info["selection_wall_time"])
    rows = res.table()
    assert [r["stage"] for r in rows] == ["sft", "dpo", "rlvr"] and "acc/hard" in rows[0]


def test_r1_zero_tracks_format_and_length(smoke_run):
    res = smoke_run("r1_zero").result
    hist = res.histories["r1_zero"]
    assert {"format_rate", "length", "length_wrong", "accuracy"} <= set(hist[0])
    assert res.evals["base"].summary()["format_rate"] == pytest.approx(0.0, abs=0.5)


def test_grpo_vs_drgrpo_share_the_cold_start(smoke_run):
    res = smoke_run("grpo_vs_drgrpo").result
    assert set(res.evals) == {"grpo", "dr_grpo"}
    assert all("length_wrong" in row for row in res.histories["dr_grpo"])


def test_r1_pipeline_stages_in_order(smoke_run):
    run = smoke_run("r1")
    res = run.result
    assert list(res.evals)[:4] == ["cold_start", "reasoning_rl", "rejection_sft", "final_rl"]
    assert res.info["rejection_sft"]["rejection"]["prompts"] > 0
    if "skipped" in res.info["distilled_small"]:   # the usual smoke outcome: nothing to distil
        assert any("no correct traces" in w for w in run.warnings)
    else:                                          # a lucky smoke teacher: both arms must exist
        assert {"distilled_small", "rl_small"} <= set(res.evals)
        assert res.info["rl_small"]["compute_flops"] > 0


def test_every_smoke_rl_stage_changes_its_weights(smoke_run):
    """CI exercises real RL updates end to end: no online stage of any recipe on the smoke
    profile may leave its parent's weights unchanged (all-zero rewards would)."""
    import torch

    from minimopd.cache import cache_root, load_artifact
    checked = 0
    for name in RECIPES:
        res = smoke_run(name).result
        for stage, info in res.info.items():
            if "parent" not in info:
                continue
            parent = load_artifact(cache_root() / info["parent"]).model
            child = res.models[stage]
            moved = max((p - q).abs().max().item() for p, q in zip(child.parameters(), parent.parameters()))
            assert moved > 0, f"{name}/{stage}: the RL stage left the weights of {info['parent']} unchanged"
            checked += 1
    assert checked >= 6


def test_progress_counts_the_stages_each_recipe_builds(monkeypatch, capsys):
    """`minimopd lineage` shows "stage k/n" and estimates the time left from
    RECIPE_STAGES[recipe]: a smoke run of each recipe builds exactly those cached stages, in that
    order (r1 may skip its distillation arm in smoke when the final model has no correct trace),
    and prints one summary line per stage, named after it."""
    import minimopd.progress as progress
    from minimopd.recipes import RECIPE_STAGES
    runs = []
    original = progress.recipe

    def spy(*args, **kwargs):
        cm = original(*args, **kwargs)
        run = cm.__enter__()
        runs.append(run)
        return _Exit(cm)

    class _Exit:
        def __init__(self, cm):
            self.cm = cm

        def __enter__(self):
            return runs[-1]

        def __exit__(self, *exc):
            return self.cm.__exit__(*exc)

    monkeypatch.setattr(progress, "recipe", spy)
    assert set(RECIPE_STAGES) == set(RECIPES)
    for name in ("sft", "tulu3", "r1_zero", "grpo_vs_drgrpo"):
        run_recipe(name, profile="smoke", progress=True)
        built = [key.rsplit("-", 1)[0] for key in runs[-1].seen]
        assert built == [s.split(":")[0] for s in RECIPE_STAGES[name]], (name, runs[-1].seen)
    out = capsys.readouterr().out
    assert "-- recipe 1/1: tulu3 (4 stages)" in out
    assert "[1/1 tulu3 · stage 4/4] rlvr: " in out and "[1/1 grpo_vs_drgrpo · stage 4/4] dr_grpo: " in out


def test_lineage_estimate_counts_shared_stages_once_and_learns_the_machine_speed(capsys):
    """The time left is the reference time of the stages not reached yet (a base shared by
    recipes counted once), scaled by how fast this machine trained the stages so far; a loaded
    stage costs nothing; a profile without reference times gets no estimate, said so."""
    import minimopd.progress as progress
    from minimopd.recipes import lineage_plan

    ref = dict(progress.REFERENCE_SECONDS["cpu"])
    o = ref["overhead"]
    plan = lineage_plan(["sft", "tulu3"], "cpu", shipped=())        # every stage counted
    tulu3 = ref["sft:reasoning"] + ref["tulu3_dpo"] + ref["rlvr"]
    assert plan.estimate() == pytest.approx(ref["base"] + ref["sft"] + tulu3 + 5 * o)
    assert "about" in plan.headline() and "5 stages" in plan.headline()
    plan.reach("base", None)                         # loaded from the cache: no speed information
    assert plan.estimate() == pytest.approx(ref["sft"] + tulu3 + 4 * o)
    plan.reach("sft", 2 * ref["sft"])                # this machine is twice as slow
    assert plan.estimate() == pytest.approx(2 * (tulu3 + 3 * o))
    # inside a recipe, each stage's summary line says the time left
    with progress.recipe("tulu3", 2, 2, stages=("base", "sft:reasoning", "tulu3_dpo", "rlvr"), lineage=plan):
        for key in ("base-0", "sft-1"):
            with progress.stage(key) as done:
                done("loaded from the cache")
    assert plan.reached == {"base", "sft", "sft:reasoning"}
    out = capsys.readouterr().out
    assert "[2/2 tulu3 · stage 2/4] sft: loaded from the cache" in out
    assert f"about {progress._fmt_time(2 * (ref['tulu3_dpo'] + ref['rlvr'] + 2 * o))} left" in out
    with pytest.raises(ValueError, match="unknown recipe"):
        lineage_plan(["sft", "nope"], "cpu")
    # a stage without a reference time is named, not silently counted as free
    partial = progress.Lineage("cpu", [("mine", ("base", "my_new_stage"))])
    assert partial.unmeasured() == ["my_new_stage"] and "my_new_stage (not timed yet)" in partial.headline()
    assert partial.left().endswith("+ 1 stage not timed yet left")
    unmeasured = progress.Lineage("my_profile", [("sft", ("base", "sft"))])
    assert unmeasured.estimate() is None and "none for profile 'my_profile'" in unmeasured.headline()


def test_lineage_estimate_leaves_out_the_shipped_stages(monkeypatch):
    """The stages shipped for the profile and seed load in seconds, so the opening estimate of
    `minimopd lineage --profile cpu` leaves them out and says how many there are; with the shipped
    checkpoints off (`--from-scratch`, $MINIMOPD_SHIPPED=0) or for another seed, none is left out."""
    import minimopd.progress as progress
    from minimopd import cache
    from minimopd.recipes import lineage_plan
    from minimopd.shipped import shipped_plan_stages

    ref, o = progress.REFERENCE_SECONDS["cpu"], progress.REFERENCE_SECONDS["cpu"]["overhead"]
    shipped = shipped_plan_stages("cpu", 0)
    assert {"base", "sft:reasoning", "specialist_count"} <= shipped and not any("foreign" in s for s in shipped)
    # the foreign teacher's stages are seed 1's own
    assert shipped_plan_stages("cpu", 1) == {"base", "sft:reasoning", "specialist_count"}
    plan = lineage_plan(["tulu3"], "cpu")                             # seed 0: the shipped stages left out
    assert plan.estimate() == pytest.approx(ref["tulu3_dpo"] + ref["rlvr"] + 2 * o)
    assert lineage_plan(["tulu3"], "cpu", seed=2).estimate() > plan.estimate() + ref["base"]
    assert "2 stages to train, 2 more from the shipped checkpoints" in plan.headline()
    assert shipped_plan_stages("cpu", 2) == set() and shipped_plan_stages("smoke", 0) == set()
    monkeypatch.setenv(cache.SHIPPED_ENV, "0")
    assert shipped_plan_stages("cpu", 0) == set()


@pytest.mark.parametrize("profile", ["smoke", "cpu"])
def test_every_recipe_stage_has_a_reference_time(profile):
    """A new recipe's stages are timed on the smoke and cpu profiles (progress.REFERENCE_SECONDS),
    so the estimate of `minimopd lineage --profile smoke` (or `cpu --recipes all`) never leaves a
    stage out."""
    import minimopd.progress as progress
    from minimopd.recipes import RECIPE_STAGES
    missing = sorted({s for stages in RECIPE_STAGES.values() for s in stages} - set(progress.REFERENCE_SECONDS[profile]))
    assert not missing, f"add {profile} reference times for {missing} to progress.REFERENCE_SECONDS"


def test_the_readme_command_runs_a_short_tour_on_cpu_and_everything_elsewhere():
    """`minimopd lineage` without --recipes is the README's first command, which must be fast as
    written: on `cpu` (a laptop without CUDA) every recipe takes about 11 hours, so its default is
    a tour that trains one recipe of each kind from the shipped checkpoints in under 20 minutes;
    `gpu` and `smoke` run every recipe; `--recipes all` asks for every one anywhere."""
    from minimopd import shipped
    from minimopd.recipes import RECIPES, RECIPE_STAGES, default_recipes, lineage_plan, resolve_recipes

    tour = resolve_recipes(None, "cpu")
    assert tour == default_recipes("cpu") == ["sft", "llama3", "kimi_k25"]
    assert resolve_recipes(None, "smoke") == resolve_recipes(None, "gpu") == list(RECIPES)
    assert resolve_recipes(["all"], "cpu") == list(RECIPES) and resolve_recipes(["mopd", "sft"]) == ["mopd", "sft"]
    with pytest.raises(ValueError, match="drop the other names \\(sft\\)"):
        resolve_recipes(["all", "sft"])
    with pytest.raises(ValueError, match="unknown recipe.*'nope'.*known recipes: sft.*\\(or all\\)"):
        resolve_recipes(["nope"], "cpu")
    # one recipe of each kind: SFT, learning from preferences (a reward model, then DPO), RL
    stages = {s for name in tour for s in RECIPE_STAGES[name]}
    assert {"sft", "reward_model", "llama3_dpo1", "mixed_rl"} <= stages
    plan = lineage_plan(tour, "cpu")          # seed 0: base, both SFTs, the notes SFT and the reward model ship
    assert plan.shipped == {"base", "sft", "sft:reasoning", "sft_notes", "reward_model"}
    assert plan.shipped <= shipped.shipped_plan_stages("cpu", 0)
    assert not plan.unmeasured() and plan.estimate() < 20 * 60
    assert lineage_plan(list(RECIPES), "cpu").estimate() > 10 * plan.estimate()


def test_cli_says_what_the_cpu_tour_leaves_out(monkeypatch, capsys, tmp_path):
    from minimopd import cli, recipes
    from minimopd.artifacts import RecipeResult

    ran = []

    def fake_run(name, prof, **kw):
        ran.append(name)
        return RecipeResult(name, prof.name, 0)

    monkeypatch.setattr(recipes, "run_recipe", fake_run)
    monkeypatch.setattr("minimopd.report.html_report", lambda *a, **k: tmp_path / "report.html")
    assert cli.main(["lineage", "--profile", "cpu", "--out", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert ran == ["sft", "llama3", "kimi_k25"] and "recipes=sft,llama3,kimi_k25" in out
    assert f"3 of the {len(recipes.RECIPES)} recipes; `--recipes all` runs every one (about" in out
    assert "`--recipes mopd` multi-teacher on-policy distillation" in out
    ran.clear()
    assert cli.main(["lineage", "--profile", "cpu", "--recipes", "all", "--out", str(tmp_path), "--no-progress"]) == 0
    assert ran == list(recipes.RECIPES) and "short tour" not in capsys.readouterr().out
    with pytest.raises(SystemExit):                        # --recipes with no name: argparse's usage error
        cli.main(["lineage", "--recipes"])
    assert cli.main(["lineage", "--profile", "cpu", "--recipes", "all", "mopd"]) == 2
    assert "drop the other names (mopd)" in capsys.readouterr().err
