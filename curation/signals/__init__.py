"""Flag signals on plain strings and arrays, and the learned combiner that turns them into probabilities.

* `checks`: mismatch checks (numbers, dates, names in a sentence that its source lacks) and
  de-contextualisation (a biography's "He" becomes the subject's name);
* `lm`: log-probabilities from the embedded language model, and PMI / consistency built on them;
* `features`: per-sentence rows, and pair features for near-duplicate verification (`duplicate_row`,
  `pair_features`); `long_pairs`: multi-sentence pairs built from labelled sentence pairs, to fit on;
* `combiner`: logistic regression (fit, grouped cross-validation, prediction) in numpy.

Only `lm.LMScorer` touches a model; everything else is pure and unit-tested on literals.
"""
