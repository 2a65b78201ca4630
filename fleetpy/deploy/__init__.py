"""Deploying from git: a deployment's spec and plan (deployment), rolling updates
(rollout), git hooks and watchers (gitops)."""
