# Databricks notebook source
# MAGIC %md
# MAGIC # Train from a job config
# MAGIC
# MAGIC Runs the whole workflow a YAML job config describes (data, features, model, tuning,
# MAGIC calibration, validation, MLflow) on this cluster's Spark session, then prints the summary.
# MAGIC The cluster needs the `orchestrator` wheel installed (the bundle's jobs attach it; on an
# MAGIC interactive cluster install `dist/orchestrator-*.whl` as a cluster library) and, for
# MAGIC SparkTrials tuning, dedicated (single-user) access mode on an ML runtime.
# MAGIC
# MAGIC Off Databricks the widgets take their defaults, or `ORCHESTRATOR_WIDGET_<NAME>` from the
# MAGIC environment.

# COMMAND ----------

from orchestrator.entrypoints.notebook_support import notebook_dbutils, train_from_config
from orchestrator.io.session import get_spark
from orchestrator.summary import get_workflow_summary

dbutils = notebook_dbutils(globals())
dbutils.widgets.text("config", "../conf/demo.yml", "Job config (YAML)")
dbutils.widgets.text("output_dir", "", "Output directory (blank: the config's)")

# COMMAND ----------

spark = get_spark("orchestrator-notebook")
results = train_from_config(dbutils.widgets.get("config"), spark=spark,
                            output_dir=dbutils.widgets.get("output_dir") or None,
                            dbutils=dbutils)

# COMMAND ----------

print(get_workflow_summary(results))
