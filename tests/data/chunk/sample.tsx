import React, { useState } from 'react';

type Props = { label: string; initial?: number };

export function Counter({ label, initial = 0 }: Props) {
  const [n, setN] = useState(initial);
  return (
    <button onClick={() => setN(n + 1)}>
      {label}: {n}
    </button>
  );
}

export default function App() {
  return <Counter label="clicks" />;
}
