"""Study: plan x learning rate x seed variants of one config, trained from
the same start, laid side by side on one page (`kerasft study`)."""

from kerasft.study.runner import (
    PLAN_NAMES,
    StudyPlan,
    StudyResult,
    Variant,
    plan_study,
    run_study,
)

__all__ = ["PLAN_NAMES", "StudyPlan", "StudyResult", "Variant", "plan_study",
           "run_study"]
