"""Datasets: YAML manifests, registration into detectron2, checks, statistics, the demo data."""
