"""Run-time plumbing usable from every part: checkpoint files and manifests, run and sweep directories,
Ray start-up, process threads, monitoring, the console. Imports nothing of ``trainer`` but ``trainer.metrics``.
"""
