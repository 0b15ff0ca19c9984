"""analysis: from MLflow to Arrow/Parquet to ablation tables, statistics, plots and a report."""
