"""Spec fuzzing at scale: thousands of random and mutated specs through the loader and the CLI's rules.

Command:  python experiments/fuzz_specs.py [--cases 3000]
Smoke:    python experiments/fuzz_specs.py --smoke
Machine:  any; README "What happens when things go wrong" gives the last figures.
Result:   the number of cases per kind and the number of failures (a failure is any exception
          other than SpecError, or an accepted spec that JSON Schema rejects or whose predicted
          shapes differ from the shapes the model produces); hypothesis prints the smallest
          failing input if there is one.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jsonschema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from jaxcnn.spec import SpecError, loads_spec, parse_spec  # noqa: E402

from spec_fuzzing import check_accepted, json_values, mutated_specs  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=3000, help="cases per kind (default 3000)")
    p.add_argument("--smoke", action="store_true", help="50 cases per kind")
    args = p.parse_args()
    cases = 50 if args.smoke else args.cases
    validator = jsonschema.Draft202012Validator(json.loads((ROOT / "specs" / "schema.json").read_text()))
    bases = [json.loads(path.read_text()) for path in sorted((ROOT / "specs").glob("*_*.json"))]
    counts = {"random JSON": [0, 0], "mutated specs": [0, 0], "random bytes": [0, 0]}  # [cases, accepted]
    config = settings(max_examples=cases, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))  # fmt: skip

    def run(kind: str, value: object, raw: bool = False) -> None:
        counts[kind][0] += 1
        try:
            spec = loads_spec(value, "fuzz.json") if raw else parse_spec(value, "fuzz.json")  # type: ignore[arg-type]
        except SpecError:
            return
        counts[kind][1] += 1
        check_accepted(spec, value, validator, shapes=kind == "mutated specs")

    def prop(kind: str, raw: bool) -> Callable[[object], None]:
        def check(value: object) -> None:
            run(kind, value, raw)

        return check

    failures = 0
    started = time.perf_counter()
    for kind, strategy, raw in (("random JSON", json_values(), False), ("mutated specs", mutated_specs(bases), False),
                                ("random bytes", st.binary(max_size=300), True)):  # fmt: skip
        try:
            config(given(strategy)(prop(kind, raw)))()
        except Exception as err:  # hypothesis re-raises the smallest failing case
            failures += 1
            print(f"FAILURE in {kind}: {type(err).__name__}: {err}")
    total = sum(c[0] for c in counts.values())
    for kind, (n, accepted) in counts.items():
        print(f"{kind}: {n} cases, {accepted} accepted as valid")
    print(f"{total} cases in {time.perf_counter() - started:.0f} s, {failures} failures")
    raise SystemExit(1 if failures else 0)


if __name__ == "__main__":
    main()
