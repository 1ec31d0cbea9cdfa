"""The job queue and the worker that runs the recipe on claimed jobs.

- ``jobs.queue``: submit / claim / heartbeat / report_progress / complete / fail / cancel /
  release / requeue_stale, and owner-scoped get_job / list_jobs / progress_events /
  queue_position. No torch: the web process imports it.
- ``jobs.worker``: ``python -m jobs.worker [--data-dir D] [--gpu N] [--once] [--until-empty]
  [--poll-s S] [--lease-s S]``; one worker per GPU. Only this process imports ``ia3app``'s
  training code.
- ``jobs.progress``: the throttled progress writer and the heartbeat thread.
- ``jobs.local``: ``start_local_worker(data_dir)`` (or ``start_ray_dispatcher(data_dir, address)``)
  for the web app, stopped when the app exits.
- The Ray backend (``--ray``): ``jobs.ray_backend`` the dispatcher on the app's machine
  (``python -m jobs.ray_backend --address auto``; the only writer of the database and files),
  ``jobs.ray_remote`` the task that runs one attempt on a node and the mailbox actor that carries
  progress, checkpoints and stop flags, ``jobs.ray_resources`` what a job asks Ray for, and
  ``jobs.ray_serve`` the serving engine as Ray Serve replicas routed by adapter.
"""
