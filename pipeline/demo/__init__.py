"""The built-in demo dataset: synthetic brain-angiography phantoms in the RSNA layout."""

from pipeline.demo.generate import DemoSummary, generate_demo_data, plan_dataset

__all__ = ["DemoSummary", "generate_demo_data", "plan_dataset"]
