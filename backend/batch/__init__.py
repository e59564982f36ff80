"""`distillery batch`: prompts x presets x seeds, one normal engine job each, on this machine or on Ray.

    plan.py        the prompts file, the job list, one folder per job, the settings hash
    job.py         one job in a worker process: the engine's run_job into its folder, resumed from its checkpoints
    results.py     DIR/results.jsonl, one row per job, rewritten atomically by the driver alone
    gallery.py     DIR/index.html, a static gallery of the rows
    local.py       the embedded runner: worker processes on this machine (no Ray needed)
    ray_runner.py  the Ray runner: a task per job (CPU presets) or an actor per GPU (GPU presets)
    driver.py      run_batch: skip what is done, run the rest, one progress bar, Ctrl-C keeps what is done
"""
