"""The demo dataset: deterministic for a seed, of every column type, and learnable."""

from __future__ import annotations

import pandas as pd
import pytest

from orchestrator.io.demo_data import (
    SNAPSHOTS_PER_CUSTOMER,
    generate_churn_frame,
    generate_feature_snapshots,
    write_demo_tables,
)


def test_same_seed_same_frame_other_seed_other_frame():
    a = generate_churn_frame(400, seed=3)
    pd.testing.assert_frame_equal(a, generate_churn_frame(400, seed=3))
    b = generate_churn_frame(400, seed=4)
    assert not a.drop(columns="customer_id").equals(b.drop(columns="customer_id"))


def test_columns_of_every_type_with_gaps():
    frame = generate_churn_frame(2000, seed=1)
    assert frame["customer_id"].is_unique
    assert pd.api.types.is_datetime64_any_dtype(frame["signup_ts"])
    assert pd.api.types.is_datetime64_any_dtype(frame["last_login_ts"])
    for column in ["age", "tenure_months", "monthly_charges", "total_charges", "support_calls"]:
        assert pd.api.types.is_numeric_dtype(frame[column]), column
    for column in ["has_partner", "paperless_billing", "is_senior"]:
        assert frame[column].dtype == bool, column
    assert set(frame["contract"]) == {"month-to-month", "one_year", "two_year"}
    assert frame["support_notes"].str.contains(";").any()
    assert frame[["age", "total_charges", "payment_method"]].isna().sum().gt(0).all()
    assert set(frame["churned"]) == {0, 1}
    assert 0.15 < frame["churned"].mean() < 0.45
    assert (frame["signup_ts"] < frame["last_login_ts"]).all()


def test_label_is_learnable_but_not_trivially():
    from sklearn.compose import ColumnTransformer
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame = generate_churn_frame(5000, seed=42)
    numeric = ["age", "tenure_months", "monthly_charges", "total_charges", "support_calls"]
    categorical = ["contract", "payment_method", "region", "plan", "has_partner", "is_senior"]
    model = make_pipeline(
        ColumnTransformer([
            ("num", make_pipeline(SimpleImputer(), StandardScaler()), numeric),
            ("cat", make_pipeline(SimpleImputer(strategy="most_frequent"),
                                  OneHotEncoder(handle_unknown="ignore")), categorical),
            ("text", TfidfVectorizer(), "support_notes"),
        ]),
        LogisticRegression(max_iter=2000),
    )
    train, test = train_test_split(frame, test_size=0.3, random_state=0,
                                   stratify=frame["churned"])
    model.fit(train, train["churned"])
    auc = roc_auc_score(test["churned"], model.predict_proba(test)[:, 1])
    assert 0.75 < auc < 0.97
    # each signal alone is weaker than all together
    tenure_auc = roc_auc_score(test["churned"], -test["tenure_months"])
    assert 0.55 < tenure_auc < auc


def test_feature_snapshots_bracket_the_label_event():
    churn = generate_churn_frame(300, seed=5)
    features, labels = generate_feature_snapshots(churn, seed=5)
    assert len(labels) == 300 and labels["customer_id"].is_unique
    assert (features.groupby("customer_id").size() == SNAPSHOTS_PER_CUSTOMER).all()
    assert not features.duplicated(["customer_id", "as_of_ts"]).any()
    joined = features.merge(labels, on="customer_id")
    before = joined[joined["as_of_ts"] <= joined["event_ts"]]
    after = joined[joined["as_of_ts"] > joined["event_ts"]]
    assert len(before) and len(after)
    # churners stop logging in after the event: a lookup past event_ts would leak the label
    assert after.loc[after["churned"] == 1, "logins_30d"].mean() < 1
    assert before.loc[before["churned"] == 1, "logins_30d"].mean() > 5
    pd.testing.assert_frame_equal(features, generate_feature_snapshots(churn, seed=5)[0])


@pytest.mark.spark
def test_written_tables_are_deterministic_delta_tables(spark, tmp_path):
    from pyspark.testing import assertDataFrameEqual

    from orchestrator.io.delta import is_delta_table

    first = write_demo_tables(spark, str(tmp_path / "a"), n_customers=300, seed=9)
    second = write_demo_tables(spark, str(tmp_path / "b"), n_customers=300, seed=9)
    assert sorted(first) == ["churn", "churn_labels", "customer_features"]
    for name in first:
        assert is_delta_table(spark, first[name])
        a = spark.read.format("delta").load(first[name])
        b = spark.read.format("delta").load(second[name])
        assertDataFrameEqual(a, b)
    churn = spark.read.format("delta").load(first["churn"])
    assert churn.count() == 300
    types = dict(churn.dtypes)
    assert types["signup_ts"] == "timestamp" and types["has_partner"] == "boolean"
    assert types["churned"] == "int" and types["support_notes"] == "string"
    # the Delta table holds the generated frame, value for value
    expected = generate_churn_frame(300, seed=9)
    got = churn.toPandas().sort_values("customer_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    features = spark.read.format("delta").load(first["customer_features"])
    assert features.count() == 300 * SNAPSHOTS_PER_CUSTOMER


@pytest.mark.spark
def test_job_main_writes_the_tables(spark, tmp_path):
    import importlib.util
    from pathlib import Path

    job = Path(__file__).resolve().parents[1] / "jobs" / "make_demo_data.py"
    spec = importlib.util.spec_from_file_location("make_demo_data", job)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "demo"
    assert module.main(["--output", str(out), "--customers", "120", "--seed", "3"]) == 0
    churn = spark.read.format("delta").load(str(out / "churn")).toPandas()
    assert len(churn) == 120
    expected = generate_churn_frame(120, seed=3)
    assert sorted(churn["customer_id"]) == sorted(expected["customer_id"])
    with pytest.raises(SystemExit):
        module.main(["--customers", "0"])
