"""Plans: one YAML file describes a whole experiment; this module expands it into runs.

A plan (``config/plans/NAME.yaml``) names the dataset, the teachers (downloaded or pretrained),
the teacher→student pairs, the method entries (a kdsrc method + settings, with per-pair
overrides), which methods run on which pairs, the seeds and the tables. It is validated against
``config/schema/plan.schema.yaml`` (JSON schema 2020-12) and then every run it implies is
resolved with :func:`kdsrc.config.resolve_run_config`, so a typo anywhere fails before any job
starts, naming the key.

The Snakemake rules, the plan-cost command and the tests all read plans through this module:
the plan is the single source of truth for the DAG's contents.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from .atomicio import atomic_write_text
from .config import RUN_CHOICES, canonical, config_hash, resolve_run_config
from . import paths
from .errors import ConfigError

REPO_CONFIG = Path("config")
SCHEMA_PATH = REPO_CONFIG / "schema" / "plan.schema.yaml"
VANILLA = "vanilla"
NO_TEACHER = "none"


@dataclass(frozen=True)
class Run:
    """One distillation (or student-alone) run: the five wildcards plus its resolved config."""

    dataset: str
    teacher: str
    student: str
    method: str
    seed: int
    config: dict[str, Any] = field(compare=False, hash=False)
    #: whether the method loads Angular-KD views pretrained by the pipeline (stage 1)
    needs_pretrained_views: bool = field(default=False, compare=False)

    @property
    def wildcards(self) -> dict[str, str]:
        return {"dataset": self.dataset, "teacher": self.teacher, "student": self.student,
                "method": self.method, "seed": str(self.seed)}

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.teacher}/{self.student}/{self.method}/seed{self.seed}"

    @property
    def config_hash(self) -> str:
        return config_hash(self.config)


#: plan-level keys copied into every run config (values and defaults: kdsrc.config.RUN_CHOICES)
RUN_SWITCHES = ("mode", "precision", "channels_last", "compile", "cuda_graph")
#: what the pipeline's ``--config mode=...`` may set for every run of a plan (besides ``plan``)
MODE_OVERRIDES = next(s.choices for s in RUN_CHOICES if s.name == "mode")


def cache_problem(cfg: dict[str, Any]) -> str | None:
    """Why a run config cannot read a teacher cache (its recipe or its method), or None; what
    the run itself finds when it opens one (kdsrc.engine.loop.build_run)."""
    from .distillers import get_method
    from .engine.recipe import cache_blocker

    cfg = resolve_run_config(cfg)    # a canonical config leaves out what is at its default
    problem = cache_blocker(cfg["solver"])
    if problem is None and get_method(cfg["method"]["name"]).cache_needs_for(
            dict(cfg["method"])) is None:
        problem = (f"method {cfg['method']['name']!r} (with these settings) reads more of the "
                   "teacher than a cache holds")
    return problem


def _needs_pretrained_views(config: dict[str, Any]) -> bool:
    from .distillers import get_method

    method = dict(config["method"])
    return get_method(method.pop("name")).needs_pretrained_views(method)


def _stage_one_setting(config: dict[str, Any]) -> str:
    from .distillers import get_method

    return get_method(config["method"]["name"]).stage_one_setting


def _format_path(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def validate_schema(plan: Any, schema_path: str | Path = SCHEMA_PATH, *, name: str = "plan"
                    ) -> None:
    """Validate against the JSON schema; the error names the key and what is allowed."""
    import jsonschema

    if isinstance(plan, dict) and "teacher_cache" in plan:
        raise ConfigError(f"{name}: teacher_cache: this plan key is now cache_teachers (it builds "
                          f"each teacher's exact cache; the run key teacher_cache says whether "
                          f"a run may read one)")
    schema = declared_schema(yaml.safe_load(Path(schema_path).read_text()))
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(plan), key=lambda e: (len(e.path), list(e.path)))
    if errors:
        e = errors[0]
        detail = e.message
        if e.validator == "additionalProperties":
            allowed = sorted(e.schema.get("properties", {}))
            detail += f"; allowed keys: {', '.join(allowed)}" if allowed else ""
        elif e.validator in ("oneOf", "anyOf") and all(
                "required" in sub for sub in e.validator_value):
            detail = "needs exactly one of: " + " or ".join(
                " + ".join(sub["required"]) for sub in e.validator_value)
        elif e.validator == "enum":
            detail = f"{e.instance!r} is not allowed; allowed values: " + \
                     ", ".join(map(str, e.validator_value))
        raise ConfigError(f"{name}: {_format_path(e.path)}: {detail}")


def declared_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The plan schema with the solver keys, the run keys (mode, precision, channels_last,
    compile, cuda_graph), the dataset names, the table kinds and the metrics filled in from
    their one declaration (:mod:`kdsrc.config`, :mod:`kdsrc.dataset_facts`,
    :mod:`kdsrc.report.kinds`, :mod:`kdsrc.report.records`)."""
    from .config import RUN_CHOICES, SOLVER
    from .dataset_facts import DATASET_NAMES
    from .report.kinds import TABLE_KINDS
    from .report.records import METRICS

    table = schema["properties"]["tables"]["additionalProperties"]["properties"]
    table["kind"] = {"enum": sorted(TABLE_KINDS)}
    table["metric"] = {"enum": list(METRICS)}
    table["metrics"]["items"] = {"enum": list(METRICS)}

    schema["properties"]["dataset"] = {"enum": list(DATASET_NAMES)}
    schema["$defs"]["solver"]["properties"] = {s.name: s.json_schema() for s in SOLVER}
    for s in RUN_CHOICES:
        if s.name in RUN_SWITCHES:
            schema["properties"][s.name] = s.json_schema()
    return schema


def _merge(base: dict, override: dict | None) -> dict:
    out = copy.deepcopy(base)
    for k, v in (override or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _method_block(entry: Any) -> dict:
    return {"name": entry} if isinstance(entry, str) else dict(entry)


class Plan:
    """A validated plan with its expanded runs."""

    def __init__(self, data: dict[str, Any], *, name: str = "plan",
                 schema_path: str | Path = SCHEMA_PATH, resolved: dict[str, Any] | None = None):
        """``resolved``: :meth:`resolved` of this same plan, from a :func:`load_plan` cache (the
        references were checked and every run resolved when it was written)."""
        validate_schema(data, schema_path, name=name)
        self.name = name
        self.data = data
        self._teacher_configs: dict[str, dict[str, Any]] = {}
        self._init_configs: dict[str, dict[str, Any]] = {}
        if resolved is not None:
            self.__dict__["runs"] = [Run(**r) for r in resolved["runs"]]
            self._teacher_configs = dict(resolved["teacher_configs"])
            self._init_configs = dict(resolved.get("init_configs", {}))
        else:
            self._check_references()
            # resolve every run and teacher now: a bad setting fails before any job starts
            self.runs
            for t in self.trained_teachers():
                self._teacher_configs[t] = self.teacher_config(t)
            for t in self.pretrained_inits():
                self._init_configs[t] = self.init_config(t)
        self._by_key = {r.key: r for r in self.runs}

    def resolved(self) -> dict[str, Any]:
        """Every run and pretraining config, resolved: what a cache needs to rebuild the plan
        without importing the methods (and torch)."""
        return {"runs": [vars(r) for r in self.runs],
                "teacher_configs": {t: self.teacher_config(t) for t in self.trained_teachers()},
                "init_configs": {t: self.init_config(t) for t in self.pretrained_inits()}}

    # -- plain accessors -------------------------------------------------------------------
    @property
    def _switches(self) -> dict[str, str]:
        """The plan-wide run switches it sets (the others keep resolve_run_config's defaults)."""
        return {k: self.data[k] for k in RUN_SWITCHES if k in self.data}

    @property
    def dataset(self) -> str:
        return self.data["dataset"]

    @property
    def seeds(self) -> list[int]:
        return list(self.data["seeds"])

    @property
    def teachers(self) -> dict[str, dict]:
        return self.data["teachers"]

    @property
    def tables(self) -> dict[str, dict]:
        return self.data["tables"]

    @property
    def data_root(self) -> str:
        return self.data.get("data_root", "data")

    @property
    def download(self) -> bool:
        return bool(self.data.get("download", False))

    @property
    def caches_teachers(self) -> bool:
        """The plan key ``cache_teachers``: build each teacher's exact cache, point runs at it."""
        return bool(self.data.get("cache_teachers", False))

    def teachers_with(self, source: str) -> list[str]:
        return sorted(t for t, spec in self.teachers.items() if spec["source"] == source)

    def trained_teachers(self) -> list[str]:
        """Teachers the workflow trains (``pretrain``, ``finetune``): each has a run config."""
        return sorted(self.teachers_with("pretrain") + self.teachers_with("finetune"))

    def inits_with(self, kind: str) -> list[str]:
        """Fine-tuned teachers whose initial weights are downloaded (``url``) or pretrained in
        the workflow (``pretrain``)."""
        return [t for t in self.teachers_with("finetune") if kind in self.teachers[t]["init"]]

    def pretrained_inits(self) -> list[str]:
        return self.inits_with("pretrain")

    def teacher_upsample(self, teacher: str) -> int | None:
        """The size a trained teacher was trained at by upsampling (its ``solver.upsample``):
        it sees every run's images the same way."""
        if teacher not in self.trained_teachers():
            return None
        return self.teacher_config(teacher)["solver"].get("upsample")

    # -- references between sections ------------------------------------------------------
    def expand_pairs(self, refs: list) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for ref in refs:
            group = self.data["pairs"].get(ref) if isinstance(ref, str) else [ref]
            if group is None:
                raise ConfigError(f"{self.name}: unknown pair group {ref!r}; groups: "
                                  f"{', '.join(sorted(self.data['pairs']))}")
            out.extend((t, s) for t, s in group if (t, s) not in out)
        return out

    def _check_references(self) -> None:
        from .models import MODEL_NAMES

        for t in self.teachers:
            if t not in MODEL_NAMES:
                raise ConfigError(f"{self.name}: teachers.{t}: unknown model; valid models: "
                                  f"{', '.join(MODEL_NAMES)}")
        in_archive = [t for t in self.teachers_with("download") if "member" in self.teachers[t]]
        if in_archive and "teacher_archive" not in self.data:
            raise ConfigError(f"{self.name}: teacher_archive: required when a teacher is a "
                              f"member of it ({', '.join(in_archive)})")
        for group, pairs in self.data["pairs"].items():
            for t, s in pairs:
                if t not in self.teachers:
                    raise ConfigError(f"{self.name}: pairs.{group}: teacher {t!r} is not in "
                                      f"teachers ({', '.join(sorted(self.teachers))})")
                if s not in MODEL_NAMES:
                    raise ConfigError(f"{self.name}: pairs.{group}: unknown student {s!r}")
        methods = self.data["methods"]
        for i, block in enumerate(self.data["runs"]):
            self.expand_pairs(block["pairs"])
            for m in block["methods"]:
                if m not in methods:
                    raise ConfigError(f"{self.name}: runs.{i}.methods: {m!r} is not a method "
                                      f"entry; entries: {', '.join(sorted(methods))}")
        for name, spec in self.tables.items():
            for m in spec.get("methods", []) + list(spec.get("bases", {})) + \
                    list(spec.get("bases", {}).values()):
                if m not in methods:
                    raise ConfigError(f"{self.name}: tables.{name}: method {m!r} is not a "
                                      "method entry")
            self.expand_pairs(spec.get("pairs", []))
            for t in spec.get("teachers", []):
                if t not in self.teachers:
                    raise ConfigError(f"{self.name}: tables.{name}.teachers: {t!r} is not a "
                                      "teacher of this plan")

    # -- expansion -------------------------------------------------------------------------
    def run_config(self, teacher: str, student: str, method: str, seed: int) -> dict[str, Any]:
        """The resolved run config of one run (the plan's recipe + method entry + overrides)."""
        entry = self.data["methods"][method]
        override = entry.get("overrides", {}).get(f"{teacher}->{student}", {})
        solver = _merge(_merge(self.data.get("solver", {}), entry.get("solver")),
                        override.get("solver"))
        settings = _merge(_method_block(entry["method"]), override.get("method"))
        kd_method = settings["name"]
        raw = {
            "dataset": self.dataset,
            "student": student,
            "method": settings,
            "solver": solver,
            "seed": seed,
            **self._switches,
            "teacher_cache": "auto" if self.caches_teachers else "off",
            "teacher": (NO_TEACHER if teacher == NO_TEACHER else
                        {"name": teacher, "checkpoint": teacher_model_path(self.dataset, teacher),
                         "cache": (teacher_cache_path(self.dataset, teacher)
                                   if self.caches_teachers else None)}),
        }
        scheme = entry.get("cache")
        if scheme is not None:
            # the entry's runs read this scheme of their teacher's cache (an autoaugment-K
            # cache holds the views they train on)
            if teacher == NO_TEACHER:
                raise ConfigError(f"{self.name}: methods.{method}: cache: a run without a "
                                  "teacher has no teacher cache")
            raw["teacher"]["cache"] = teacher_cache_path(self.dataset, teacher, scheme)
            raw["teacher_cache"] = "auto"
        if teacher != NO_TEACHER and self.teacher_upsample(teacher) is not None:
            raw["teacher"]["upsample"] = self.teacher_upsample(teacher)
        where = f"methods.{method}" + (f" ({teacher}->{student})" if override else "")
        try:
            resolved = resolve_run_config(raw)
        except ConfigError as e:
            raise ConfigError(f"{self.name}: {where}: {e} [kdsrc method {kd_method!r}]") from None
        if scheme is not None:
            problem = cache_problem(resolved)
            if problem is not None:
                # asked for by name: a run that would silently go online is another run
                raise ConfigError(f"{self.name}: {where}: cache: {scheme}: its runs cannot read "
                                  f"a teacher cache: {problem}")
        return canonical(resolved)

    @cached_property
    def runs(self) -> list[Run]:
        runs: dict[str, Run] = {}
        for block in self.data["runs"]:
            for teacher, student in self.expand_pairs(block["pairs"]):
                for method in block["methods"]:
                    t = NO_TEACHER if method == VANILLA else teacher
                    for seed in self.seeds:
                        cfg = self.run_config(t, student, method, seed)
                        run = Run(self.dataset, t, student, method, seed, cfg,
                                  _needs_pretrained_views(cfg))
                        if run.needs_pretrained_views:
                            # the run reads the file its stage 1 writes: its config says where
                            cfg["method"][_stage_one_setting(cfg)] = views_path(run)
                        runs.setdefault(run.key, run)
        return sorted(runs.values(), key=lambda r: r.key)

    def stage_one_config(self, run: Run) -> dict[str, Any]:
        """The config a run's stage 1 trains from: the run's, without the stage-1 file it
        writes (which depends on teacher, method settings and seed, not on the student)."""
        cfg = copy.deepcopy(run.config)
        cfg["method"][_stage_one_setting(cfg)] = None
        return cfg

    def run_groups(self, size: int) -> list[list[Run]]:
        """The runs trained together when ``runs_per_gpu`` is ``size`` (a run-time choice, in no
        hash): the runs of each teacher (its dataset; teacher ``none`` too) in plan order, in
        chunks of ``size``. Only groups of two or more: a run left alone is a ``distill`` job."""
        if size < 2:
            return []
        by_teacher: dict[tuple[str, str], list[Run]] = {}
        for run in self.runs:
            by_teacher.setdefault((run.dataset, run.teacher), []).append(run)
        groups = []
        for runs in by_teacher.values():
            groups += [runs[i:i + size] for i in range(0, len(runs), size)]
        return [g for g in groups if len(g) > 1]

    def run(self, teacher: str, student: str, method: str, seed: int | str) -> Run:
        key = f"{self.dataset}/{teacher}/{student}/{method}/seed{seed}"
        if key not in self._by_key:
            raise ConfigError(f"{self.name}: no run {key} in this plan")
        return self._by_key[key]

    def teacher_config(self, teacher: str) -> dict[str, Any]:
        """Run config of a teacher's pretraining or fine-tune (method vanilla, teacher none)."""
        if teacher in self._teacher_configs:
            return copy.deepcopy(self._teacher_configs[teacher])
        spec = self.teachers[teacher]
        self._teacher_configs[teacher] = self._vanilla_config(
            teacher, spec.get("solver"), spec.get("seed", 0), f"teachers.{teacher}")
        return copy.deepcopy(self._teacher_configs[teacher])

    def init_config(self, teacher: str) -> dict[str, Any]:
        """Run config of the in-workflow pretraining a fine-tuned teacher starts from
        (``init: {pretrain: solver}``)."""
        if teacher in self._init_configs:
            return copy.deepcopy(self._init_configs[teacher])
        spec = self.teachers[teacher]
        return self._vanilla_config(teacher, spec["init"]["pretrain"], spec.get("seed", 0),
                                    f"teachers.{teacher}.init.pretrain")

    def _vanilla_config(self, model: str, solver: dict | None, seed: int, where: str
                        ) -> dict[str, Any]:
        try:
            return canonical(resolve_run_config({
                "dataset": self.dataset, "student": model, "method": VANILLA,
                "teacher": NO_TEACHER, "solver": _merge(self.data.get("solver", {}), solver),
                "seed": seed, **self._switches,
            }))
        except ConfigError as e:
            raise ConfigError(f"{self.name}: {where}: {e}") from None

    def teachers_used(self) -> list[str]:
        return sorted({r.teacher for r in self.runs if r.teacher != NO_TEACHER} |
                      {t for spec in self.tables.values() for t in spec.get("teachers", [])})

    def table_runs(self, table: str) -> list[Run]:
        """The runs whose eval records a table reads (its kind says which:
        :mod:`kdsrc.report.kinds`)."""
        from .report.kinds import kind_of

        spec = self.table_spec(table)
        kind = kind_of(spec)
        pairs, methods = kind.pairs(spec), kind.methods(spec)
        wanted = {(NO_TEACHER if m == VANILLA else t, s, m) for t, s in pairs for m in methods}
        found = [r for r in self.runs if (r.teacher, r.student, r.method) in wanted]
        missing = wanted - {(r.teacher, r.student, r.method) for r in found}
        if missing:
            t, s, m = sorted(missing)[0]
            raise ConfigError(f"{self.name}: tables.{table}: needs {m} on {t}->{s}, which no "
                              "`runs` block schedules")
        return found

    def table_spec(self, table: str) -> dict[str, Any]:
        """A table's spec for kdsrc.report: pair groups resolved to explicit pairs, key order
        kept (it is the column order)."""
        spec = dict(self.tables[table])
        if "pairs" in spec:
            spec["pairs"] = [list(p) for p in self.expand_pairs(spec["pairs"])]
        return spec

    def table_teachers(self, table: str) -> list[str]:
        """The teachers whose teacher records a table reads."""
        from .report.kinds import kind_of

        spec = self.table_spec(table)
        return kind_of(spec).teachers(spec)


# -- paths (the patterns: kdsrc.paths) ------------------------------------------------------
def teacher_model_path(d: str, t: str) -> str:
    return paths.fill(paths.TEACHER_MODEL, dataset=d, teacher=t)


def teacher_eval_path(d: str, t: str) -> str:
    return paths.fill(paths.TEACHER_EVAL, dataset=d, teacher=t)


def teacher_log_path(d: str, t: str) -> str:
    return paths.fill(paths.TEACHER_LOG, dataset=d, teacher=t)


def teacher_cache_path(d: str, t: str, scheme: str = "exact") -> str:
    """The folder of teacher ``t``'s cache of ``scheme`` (kdsrc.cache.layout)."""
    return paths.fill(paths.TEACHER_CACHE, dataset=d, teacher=t, scheme=scheme)


def _run_wildcards(run: Run) -> dict[str, Any]:
    return {"dataset": run.dataset, "teacher": run.teacher, "student": run.student,
            "method": run.method, "seed": run.seed}


def run_dir(run: Run) -> str:
    return paths.fill(paths.RUN_DIR, **_run_wildcards(run))


def eval_json_path(run: Run) -> str:
    return paths.fill(paths.RUN_EVAL, **_run_wildcards(run))


def eval_csv_path(run: Run) -> str:
    return paths.fill(paths.RUN_LOG, **_run_wildcards(run))


def views_path(run: Run) -> str:
    return paths.fill(paths.VIEWS, **_run_wildcards(run))


def table_outputs(table: str) -> list[str]:
    """What ``snakemake tables`` builds for one table: the LaTeX and Markdown table, the bar
    chart and the curves."""
    return [paths.fill(p, table=table) for p in (paths.TABLE_TEX, paths.TABLE_MD,
                                                  paths.FIGURE_BARS, paths.FIGURE_CURVES)]


def load_plan(name_or_path: str | Path, *, config_dir: str | Path = REPO_CONFIG,
              cache_dir: str | Path | None = None, mode: str | None = None) -> Plan:
    """Load ``config/plans/<name>.yaml`` (or a path to a plan file) and validate it.

    ``mode``: ``reference`` or ``fast`` trains every run of the plan in that mode (the
    pipeline's ``--config mode=...``); None or ``plan`` keeps the plan's own ``mode``.

    ``cache_dir``: keep the resolved runs there (the Snakefile uses ``.snakemake/kdsrc-plans``),
    keyed by the sha256 of the plan file, the schema and every source file of kdsrc. Resolving
    the paper plan's 528 runs imports every method and torch (~3 s per Snakemake invocation);
    a cache hit rebuilds the same :class:`Plan` without them. Any edit of the plan or of kdsrc
    changes the key; a damaged cache file is ignored and rewritten.
    """
    p = Path(name_or_path)
    if p.suffix not in (".yaml", ".yml"):
        p = Path(config_dir) / "plans" / f"{name_or_path}.yaml"
    if not p.exists():
        plans = sorted(x.stem for x in (Path(config_dir) / "plans").glob("*.yaml"))
        raise ConfigError(f"plan {str(name_or_path)!r} not found ({p}); plans: {', '.join(plans)}")
    text = p.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"plan {p} is not valid YAML: {str(e).splitlines()[0]}") from None
    schema = Path(config_dir) / "schema" / "plan.schema.yaml"
    if mode not in (None, "plan"):
        if mode not in MODE_OVERRIDES:
            raise ConfigError(f"mode: expected one of plan, {', '.join(MODE_OVERRIDES)}, "
                              f"got {mode!r}")
        if isinstance(data, dict):
            data = {**data, "mode": mode}
        text += f"\n# mode override: {mode}\n"      # part of the plan-cache key
    if cache_dir is None:
        return Plan(data, name=p.name, schema_path=schema)
    cache = Path(cache_dir) / f"{p.stem}-{_cache_key(text, schema)}.json"
    if cache.is_file():
        try:
            resolved = json.loads(cache.read_text())
        except ValueError:
            resolved = None      # damaged: resolve again and rewrite it
        if isinstance(resolved, dict):
            try:
                return Plan(data, name=p.name, schema_path=schema, resolved=resolved)
            except (TypeError, KeyError):
                pass             # written by another layout: resolve again
    plan = Plan(data, name=p.name, schema_path=schema)
    try:
        for old in Path(cache_dir).glob(f"{p.stem}-*.json"):
            old.unlink(missing_ok=True)
        atomic_write_text(json.dumps(plan.resolved(), sort_keys=True), cache)
    except OSError:
        pass                     # a read-only checkout still works, only slower
    return plan


PLAN_CACHE_FORMAT = "kdsrc-plan-cache/1"


def _cache_key(plan_text: str, schema: Path) -> str:
    h = hashlib.sha256(PLAN_CACHE_FORMAT.encode())
    h.update(plan_text.encode())
    h.update(schema.read_bytes() if schema.exists() else b"")
    root = Path(__file__).resolve().parent
    for f in sorted(root.rglob("*.py")):
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:20]
