"""Evaluation harness: PersonalRewardBench loaders, the paper's protocol and methods, batch runs, context scaling."""
