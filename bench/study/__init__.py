"""The curation study (`bench/al_study.py` is its command line): does a curated training set give a better
surrogate than a random one of the same size or cost, above all on the tail, when every model is trained to
convergence?

    protocol.py  the protocol, the strategy variants, each run's config, the job list
    records.py   each finished run's small record under docs/study/runs/ (the study's only input)
    jobs.py      running the runs on worker processes, the retrain jobs (control, transfer), committing records
    stats.py     per-sample errors aligned on the fixed test set, bootstrap intervals, samples and cost ratios
    tables.py    results.json, markdown tables and figures
"""
