"""The operator's review loop (torch-free but for `improve`): flagged frames kept with their decision,
answers from the dashboard, live numbers from the answers, and a model that learns from them only
when a gate says it is better. See docs/review.md."""
