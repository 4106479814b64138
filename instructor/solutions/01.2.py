"""01.2: how often each comm called execve, most first."""


def answer(df):
    return df.groupby("comm", observed=True).size().sort_values(ascending=False)
