"""Evaluation on frozen features: feature sources, MFCC, probes, ABX, units and plots."""
