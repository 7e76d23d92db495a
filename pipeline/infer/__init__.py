"""An inference job: its spec, plan, replica layout, run on Ray Data, progress and summary."""
