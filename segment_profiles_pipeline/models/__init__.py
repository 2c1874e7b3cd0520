"""The model layer: sample sources, one asset per SQL model, primary-key checks."""
