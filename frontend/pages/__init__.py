"""One module per page: each has `layout(ctx, ds, datasets)` and `register(app, ctx)`."""
