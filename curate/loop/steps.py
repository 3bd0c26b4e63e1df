"""One round as a table of steps (`STEPS`), run in order by `Runner.run_round`.

Round 0 makes the test, initial train and val sets and trains on them. Round k >= 1:

    generate   generator actor proposes the pool of round k (seeded by (seed, k)), past ids already stored
    solve      solver actors solve the pool (only when the acquisition scores against solutions)
    score      every candidate scored with the model of round k-1 (on the trainer, or the driver's estimate)
    mine       mutants of the top-scored candidates, solved and scored like the pool (with mining on)
    embed      the surrogate's features of the candidates and the training set (strategies that pick in them)
    select     the ranker spends the budget
    add        the chosen samples (solved now if not yet) go into the store with provenance
    train      the trainer actors retrain -> checkpoints/round-k.pt (round k+1's pool is solved meanwhile)
    evaluate   test-split metrics -> the round's record, appended to rounds.jsonl

Every step writes its result under RUN_DIR/state/round-NNN/ (`RoundFiles`, atomically) before the next starts, and
a step whose result exists is skipped, so `curate run` after a kill -9 continues at the step where it stopped:
the store dedupes by id, the trainer resumes its last epoch, and rounds.jsonl only ever gets whole rounds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from diffcurate.curate.loop import acquire, training
from diffcurate.curate.loop.context import RunContext

TRAINERS = "trainers"  # where steps run that run on every trainer ("trainer" or "trainers xM")


@dataclass(frozen=True)
class Step:
    """One step of a round: its name in the timeline, the `RoundFiles` field it writes (its presence means
    done), where it runs (an actor's name, or a function of the context and k), what it does, whether round k
    has it, and the line it says when it has run. `overlaps_next_pool`: round k+1's pool is generated and
    solved while it runs (`ray.pipeline`)."""

    name: str
    output: str
    where: str | Callable[[RunContext, int], str]
    run: Callable[[RunContext, int], None]
    needed: Callable[[RunContext, int], bool]
    says: Callable[[RunContext, int], str] | None = None
    overlaps_next_pool: bool = False

    def done(self, c: RunContext, k: int) -> bool:
        return getattr(c.paths.round(k), self.output).exists()

    def runs_on(self, c: RunContext, k: int) -> str:
        if callable(self.where):
            return self.where(c, k)
        return c.trainers_name if self.where == TRAINERS else self.where


INITIAL = Step("solve", "meta", "solvers", training.initial_sets, RunContext.first_round)
GENERATE = Step("generate", "pool", "generator", acquire.generate_pool, RunContext.acquiring)
SOLVE_POOL = Step("solve", "pool_y", "solvers", acquire.solve_pool, RunContext.solving_pool)
SCORE = Step("score", "scores", RunContext.scores_on, acquire.score_pool, RunContext.scoring)
MINE = Step("mine", "mined", RunContext.scores_on, acquire.mine, RunContext.mining)
EMBED = Step("embed", "embed", "trainer", acquire.embed, RunContext.embedding)
SELECT = Step("select", "selection", "driver", acquire.pick, RunContext.acquiring)
ADD = Step("add", "meta", "driver", acquire.add, RunContext.acquiring, says=acquire.added_line)
TRAIN = Step(
    "train", "fit", TRAINERS, training.fit, RunContext.always, says=training.trained_line, overlaps_next_pool=True
)
EVALUATE = Step("evaluate", "eval", TRAINERS, training.evaluate, RunContext.always)

STEPS = (INITIAL, GENERATE, SOLVE_POOL, SCORE, MINE, EMBED, SELECT, ADD, TRAIN, EVALUATE)
STEP_NAMES = tuple(dict.fromkeys(s.name for s in STEPS))  # the timeline's names, in order, each once
