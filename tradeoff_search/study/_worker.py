"""One worker process: ``python -m tradeoff_search.study._worker SPEC --study NAME --n-trials N
--worker-growth-mb MB [--timeout S]``, the stores' URLs in ``TRADEOFF_SEARCH_STORAGE`` and
``MLFLOW_TRACKING_URI``, as :func:`~tradeoff_search.study._pool.worker_command` starts it.

It runs trials its coordinator queued in study NAME until none is left or, its memory grown
past MB, its pool retires it (see :func:`~tradeoff_search.study._study.run_worker`), under the spec
stored in the study (see :func:`~tradeoff_search.study._open.stored_spec`), not the file SPEC says
now: SPEC's folder is where its relative paths start. Exit codes: 0 done, 2 bad spec or store,
1 a store or file failure (its one line also told to the pool, see
:func:`~tradeoff_search.process._channel.tell_pool`), 130 interrupted; an unexpected error is a
traceback and 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Sequence

from tradeoff_search.process._channel import Failed, tell_pool
from tradeoff_search.process._logs import quiet_libraries
from tradeoff_search.process._signals import stopped_like_ctrl_c
from tradeoff_search.rules import RunError, SpecError
from tradeoff_search.stores import STORAGE_ENV, TRACKING_ENV, known_failure
from tradeoff_search.study._open import stored_spec
from tradeoff_search.study._pool import BUILDERS_ENV, check_builders_hashed
from tradeoff_search.study._study import run_worker


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tradeoff_search.study._worker", description=__doc__)
    parser.add_argument("spec")
    parser.add_argument("--study", required=True)
    parser.add_argument("--n-trials", type=int, required=True)
    parser.add_argument("--timeout", type=float)
    parser.add_argument("--worker-growth-mb", type=float, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    try:
        storage = os.environ[STORAGE_ENV]
        spec = stored_spec(args.spec, args.study, storage).override(
            n_trials=args.n_trials, timeout=args.timeout, worker_growth_mb=args.worker_growth_mb
        )
        check_builders_hashed(spec, os.environ.get(BUILDERS_ENV))  # before any is imported
        quiet_libraries()
        with stopped_like_ctrl_c():
            run_worker(spec, storage, os.environ[TRACKING_ENV])
    except (SpecError, RunError) as error:  # e.g. a store gone, a builder changed: a replacement would fail too
        print(f"error: {error}", file=sys.stderr)
        tell_pool(Failed(str(error)))
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as error:
        reason = known_failure(error)
        if reason is None:  # a bug: its traceback is what a report needs
            raise
        traceback.print_exc()  # into this worker's log; the pool shows the one line
        tell_pool(Failed(reason))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
