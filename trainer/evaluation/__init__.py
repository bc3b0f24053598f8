"""Judging a policy: deterministic policies loaded from checkpoints, runs through the env, classical
baselines, backtest simulation, statistics against Equal Weight, reports, and sweep and study summaries.

Never imports ``trainer.rl``: a backtest needs the saved policy, not the machinery that trained it.
"""
