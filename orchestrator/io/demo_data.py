"""A synthetic customer-churn dataset the project generates itself (no downloads).

:func:`generate_churn_frame` draws one row per customer with numeric,
categorical, boolean, text and timestamp columns and a ``churned`` label that
depends on them through a known logistic model plus noise, so a model can
learn it (and cannot learn it perfectly). :func:`write_demo_tables` writes it
as Delta tables, with a feature table of monthly snapshots and a label table
with event timestamps for point-in-time feature lookups.

Everything is a function of the seed: the same seed gives the same tables.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

logger = logging.getLogger(__name__)

__all__ = ["generate_churn_frame", "generate_feature_snapshots", "write_demo_tables",
           "DEMO_TABLES", "OBSERVATION_TS"]

#: The day the churn outcome is observed; every timestamp is relative to it, never to "now".
OBSERVATION_TS = "2024-07-01 00:00:00"
SNAPSHOTS_PER_CUSTOMER = 6
DEMO_TABLES = ("churn", "customer_features", "churn_labels")

_CONTRACTS = ["month-to-month", "one_year", "two_year"]
_PAYMENTS = ["credit_card", "bank_transfer", "electronic_check", "mailed_check"]
_REGIONS = ["north", "south", "east", "west", "central"]
_PLANS = ["basic", "standard", "premium"]
_UNHAPPY = ["cancel", "too expensive", "slow", "outage", "competitor offer", "billing error",
            "not working", "refund"]
_NEUTRAL = ["question about invoice", "change address", "upgrade info", "password reset",
            "new device", "plan details"]
_HAPPY = ["great service", "thanks", "fast support", "happy", "works well", "recommend"]


def _sigmoid(z):
    import numpy as np

    return 1.0 / (1.0 + np.exp(-z))


def _notes(rng, risk) -> list[str]:
    """Free-text support notes whose words lean on the customer's churn risk."""
    notes = []
    for r in risk:
        n_phrases = int(rng.integers(0, 4))
        if n_phrases == 0:
            notes.append("")
            continue
        pools = rng.choice(3, size=n_phrases, p=[0.15 + 0.6 * r, 0.45 - 0.2 * r, 0.4 - 0.4 * r])
        words = [[_UNHAPPY, _NEUTRAL, _HAPPY][p][int(rng.integers(0, 6))] for p in pools]
        notes.append("; ".join(words))
    return notes


def generate_churn_frame(n_customers: int, *, seed: int) -> pd.DataFrame:
    """One row per customer with features of every type and a learnable ``churned`` label.

    Parameters
    ----------
    n_customers : int
        Number of customers (rows).
    seed : int
        Seed of every random draw; the same seed gives the same frame.

    Returns
    -------
    pandas.DataFrame
        Columns: ``customer_id`` (str), ``signup_ts`` and ``last_login_ts``
        (timestamps), ``age``, ``tenure_months``, ``monthly_charges``,
        ``total_charges``, ``support_calls`` (numeric, some missing),
        ``contract``, ``payment_method``, ``region``, ``plan`` (categorical,
        some missing), ``has_partner``, ``paperless_billing``, ``is_senior``
        (boolean), ``support_notes`` (text) and ``churned`` (int 0/1).

    Raises
    ------
    ValueError
        If ``n_customers`` is not positive.

    Examples
    --------
    >>> frame = generate_churn_frame(100, seed=1)
    >>> frame.shape
    (100, 17)
    """
    import numpy as np
    import pandas as pd

    if n_customers < 1:
        raise ValueError(f"n_customers: expected a positive integer, got {n_customers!r}.")
    rng = np.random.default_rng(seed)
    n = int(n_customers)
    observed = pd.Timestamp(OBSERVATION_TS)

    contract = rng.choice(_CONTRACTS, size=n, p=[0.55, 0.25, 0.20])
    payment = rng.choice(_PAYMENTS, size=n, p=[0.3, 0.25, 0.3, 0.15])
    region = rng.choice(_REGIONS, size=n)
    plan = rng.choice(_PLANS, size=n, p=[0.4, 0.4, 0.2])
    age = rng.normal(45, 14, size=n).clip(18, 90).round()
    is_senior = age >= 65
    has_partner = rng.random(n) < 0.45
    paperless = rng.random(n) < 0.6
    tenure = np.where(contract == "month-to-month", rng.gamma(1.5, 10, n), rng.gamma(3.0, 12, n))
    tenure = tenure.clip(1, 96).round().astype(int)
    base_charge = pd.Series(plan).map({"basic": 30.0, "standard": 60.0, "premium": 95.0}).to_numpy()
    monthly = (base_charge + rng.normal(0, 8, n)).clip(15, 140).round(2)
    total = (monthly * tenure * rng.normal(1.0, 0.03, n)).round(2)
    support_calls = rng.poisson(0.8 + 1.5 * (contract == "month-to-month"), n)

    # The true churn model: a linear score on the features plus noise.
    score = (
        -2.0
        + 1.3 * (contract == "month-to-month") - 0.9 * (contract == "two_year")
        - 0.035 * (tenure - 24)
        + 0.018 * (monthly - 60)
        + 0.35 * support_calls
        + 0.6 * (payment == "electronic_check")
        - 0.35 * has_partner
        + 0.3 * is_senior
        + 0.25 * (region == "south")
        + rng.normal(0, 0.6, n)
    )
    risk = _sigmoid(score)
    churned = (rng.random(n) < risk).astype(int)

    signup_days_ago = tenure * 30 + rng.integers(0, 30, n)
    signup = observed - pd.to_timedelta(signup_days_ago, unit="D")
    # Churners have not logged in for a while; nobody logged in before signing up.
    gap_days = np.minimum(rng.exponential(3 + 25 * churned + 5 * risk, n), signup_days_ago - 0.5)
    last_login = observed - pd.to_timedelta((gap_days * 86400).round(), unit="s")

    frame = pd.DataFrame({
        "customer_id": [f"C{seed % 1000:03d}{i:07d}" for i in range(n)],
        "signup_ts": signup.astype("datetime64[ns]"),
        "last_login_ts": pd.Series(last_login).astype("datetime64[ns]"),
        "age": age,
        "tenure_months": tenure,
        "monthly_charges": monthly,
        "total_charges": total,
        "support_calls": support_calls.astype(int),
        "contract": contract,
        "payment_method": payment.astype(object),
        "region": region,
        "plan": plan,
        "has_partner": has_partner,
        "paperless_billing": paperless,
        "is_senior": is_senior,
        "support_notes": _notes(rng, risk),
        "churned": churned,
    })
    # Realistic gaps for the imputers: unknown ages, unbilled totals, unrecorded payment methods.
    frame.loc[rng.random(n) < 0.04, "age"] = np.nan
    frame.loc[rng.random(n) < 0.02, "total_charges"] = np.nan
    frame.loc[rng.random(n) < 0.03, "payment_method"] = None
    return frame


def generate_feature_snapshots(churn: pd.DataFrame, *, seed: int) -> tuple[pd.DataFrame,
                                                                           pd.DataFrame]:
    """Monthly feature snapshots per customer and the label events, for point-in-time joins.

    Each customer gets :data:`SNAPSHOTS_PER_CUSTOMER` snapshots (``as_of_ts``)
    on month ends around their label ``event_ts``. Churners' activity fades
    before the event and stops after it, so a lookup that wrongly takes a
    snapshot later than ``event_ts`` leaks the label visibly.

    Parameters
    ----------
    churn : pandas.DataFrame
        The output of :func:`generate_churn_frame`.
    seed : int
        Seed of the draws.

    Returns
    -------
    (pandas.DataFrame, pandas.DataFrame)
        ``customer_features`` (customer_id, as_of_ts, logins_30d,
        avg_session_minutes, support_calls_30d, monthly_charges, plan) and
        ``churn_labels`` (customer_id, event_ts, churned).
    """
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed + 1)
    n = len(churn)
    observed = pd.Timestamp(OBSERVATION_TS)
    # Each customer's outcome is observed on one of the last four month starts.
    event_month = rng.integers(0, 4, n)
    event_ts = pd.DatetimeIndex([observed - pd.DateOffset(months=int(m)) for m in event_month])
    labels = pd.DataFrame({"customer_id": churn["customer_id"].to_numpy(),
                           "event_ts": event_ts.astype("datetime64[ns]"),
                           "churned": churn["churned"].to_numpy()})

    churned = churn["churned"].to_numpy()
    rows = []
    for k in range(SNAPSHOTS_PER_CUSTOMER):
        # Snapshots from four months before the event to one month after it.
        months_from_event = k - (SNAPSHOTS_PER_CUSTOMER - 2)
        as_of = pd.DatetimeIndex([t + pd.DateOffset(months=months_from_event) - pd.Timedelta(days=1)
                                  for t in event_ts])
        # Churners fade from full activity four months out to 72% in the last snapshot before
        # the event (as_of is the day before it) and stop only after it: a point-in-time lookup
        # sees a signal, a lookup that leaks a later snapshot sees zeros.
        fading = float(np.clip(1.0 - 0.07 * (months_from_event + 4), 0.1, 1.0))
        activity = np.where(churned == 1, fading if months_from_event <= 0 else 0.0, 1.0)
        logins = rng.poisson(np.maximum(0.05, 20 * activity * rng.uniform(0.6, 1.4, n)))
        rows.append(pd.DataFrame({
            "customer_id": churn["customer_id"].to_numpy(),
            "as_of_ts": as_of.astype("datetime64[ns]"),
            "logins_30d": logins.astype(int),
            "avg_session_minutes": (rng.gamma(2.0, 6.0, n) * np.maximum(activity, 0.1)).round(1),
            "support_calls_30d": rng.poisson(0.3 + 0.8 * churned * (months_from_event >= -2)),
            "monthly_charges": (churn["monthly_charges"].to_numpy()
                                + rng.normal(0, 2, n)).round(2),
            "plan": churn["plan"].to_numpy(),
        }))
    features = (pd.concat(rows, ignore_index=True)
                .sort_values(["customer_id", "as_of_ts"], kind="stable")
                .reset_index(drop=True))
    return features, labels


def write_demo_tables(spark, base_path: str, *, n_customers: int = 5000,
                      seed: int = 42) -> dict[str, str]:
    """Write the demo Delta tables under ``base_path`` (overwriting earlier ones).

    Parameters
    ----------
    spark : pyspark.sql.SparkSession
        Session with Delta Lake configured.
    base_path : str
        Directory receiving one sub-directory per table.
    n_customers : int
        Customers to generate.
    seed : int
        Seed; the same seed writes the same rows.

    Returns
    -------
    dict of str to str
        Table name (``churn``, ``customer_features``, ``churn_labels``) -> path.

    Examples
    --------
    >>> paths = write_demo_tables(spark, "data/demo", n_customers=1000)  # doctest: +SKIP
    >>> sorted(paths)  # doctest: +SKIP
    ['churn', 'churn_labels', 'customer_features']
    """
    churn = generate_churn_frame(n_customers, seed=seed)
    features, labels = generate_feature_snapshots(churn, seed=seed)
    frames = {"churn": churn, "customer_features": features, "churn_labels": labels}
    paths = {}
    for name, frame in frames.items():
        path = os.path.join(base_path, name)
        df = spark.createDataFrame(frame, schema=_spark_schema(frame))
        (df.coalesce(1).write.format("delta").mode("overwrite")
         .option("overwriteSchema", "true").save(path))
        logger.info("Wrote %d rows of %s to %s", len(frame), name, path)
        paths[name] = path
    return paths


def _spark_schema(frame: pd.DataFrame):
    """An explicit Spark schema, so column types never depend on inference."""
    import pandas as pd
    from pyspark.sql import types as T

    fields = []
    for name, dtype in frame.dtypes.items():
        if pd.api.types.is_bool_dtype(dtype):
            kind = T.BooleanType()
        elif pd.api.types.is_integer_dtype(dtype):
            kind = T.IntegerType()
        elif pd.api.types.is_float_dtype(dtype):
            kind = T.DoubleType()
        elif pd.api.types.is_datetime64_any_dtype(dtype):
            kind = T.TimestampType()
        else:
            kind = T.StringType()
        fields.append(T.StructField(name, kind, nullable=True))
    return T.StructType(fields)
