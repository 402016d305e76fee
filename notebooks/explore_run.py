# Databricks notebook source
# MAGIC %md
# MAGIC # Explore a finished run
# MAGIC
# MAGIC Shows what a training run logged to MLflow: its metrics, parameters, tags, artifacts
# MAGIC (plots, the resolved config, the summary) and the model with its registered versions.
# MAGIC Leave `run_id` blank to take the latest finished run of `experiment`.

# COMMAND ----------

from orchestrator.entrypoints.notebook_support import notebook_dbutils, run_overview, show

dbutils = notebook_dbutils(globals())
dbutils.widgets.text("run_id", "", "MLflow run id (blank: latest finished run)")
dbutils.widgets.text("experiment", "churn-demo", "Experiment name")
dbutils.widgets.text("tracking_uri", "", "Tracking URI (blank: the default)")

# COMMAND ----------

overview = run_overview(dbutils.widgets.get("run_id") or None,
                        experiment_name=dbutils.widgets.get("experiment"),
                        tracking_uri=dbutils.widgets.get("tracking_uri") or None)
print(f"run {overview.run_id}: {overview.status}; model {overview.model_uri}; "
      f"registered as {', '.join(overview.registered_versions) or 'nothing'}")

# COMMAND ----------

show(overview.metrics, globals())

# COMMAND ----------

show(overview.params, globals())

# COMMAND ----------

show(overview.tags, globals())

# COMMAND ----------

show(overview.artifacts, globals())
