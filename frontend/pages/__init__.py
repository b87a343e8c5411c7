"""One package per page (datasets, explore, curriculum): each has `layout(ctx, ds, datasets)` and
`register(app, ctx)`, split into layout / panels / callbacks. What two pages share sits beside them:
`axes` (which axes a page can plot) and `saved` (the dataset's saved selections)."""
