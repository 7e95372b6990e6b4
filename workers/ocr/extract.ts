// From recognised text to the fields a loan officer needs, each with a confidence in [0, 1]. Pure:
// the same lines always give the same fields. Labels are matched fuzzily (OCR misreads letters), values
// are parsed with OCR noise in mind (O for 0, thousands separators, currency signs).

/** One recognised word; confidence 0..100 as tesseract reports it. */
export interface Word {
  text: string;
  confidence: number;
}

export interface Line {
  words: Word[];
}

export interface ExtractedField<T> {
  value: T;
  /** label match x value words' recognition confidence x parse certainty, in [0, 1]. */
  confidence: number;
  /** The label as read on the document. */
  label: string;
}

export interface ExtractedFields {
  applicantName?: ExtractedField<string>;
  monthlyIncome?: ExtractedField<number>;
  loanAmount?: ExtractedField<number>;
  identityNumber?: ExtractedField<string>;
}

export type FieldName = keyof ExtractedFields;
export const fieldNames: readonly FieldName[] = ['applicantName', 'monthlyIncome', 'loanAmount', 'identityNumber'];

/** Label wordings seen on loan forms, normalised (lower case, letters and spaces). */
const labels: Record<FieldName, string[]> = {
  applicantName: [
    'applicant name',
    'name of applicant',
    'applicant',
    'full name',
    'name',
    'borrower name',
    'customer name',
  ],
  monthlyIncome: [
    'monthly income',
    'income per month',
    'monthly net income',
    'net monthly income',
    'gross monthly income',
    'monthly salary',
    'income monthly',
  ],
  loanAmount: ['loan amount', 'amount of loan', 'requested amount', 'amount requested', 'loan requested'],
  identityNumber: [
    'identity number',
    'id number',
    'identification number',
    'national id',
    'national id number',
    'id no',
    'identity no',
    'personal id',
    'passport number',
  ],
};

/** A label must read at least this close to a known wording to count. */
export const MIN_LABEL_SIMILARITY = 0.75;
/** Words from a PDF's text layer are exact: this is their confidence (0..100). */
export const TEXT_LAYER_WORD_CONFIDENCE = 99;
const MAX_LABEL_WORDS = 4;

const normalise = (text: string) =>
  text
    .toLowerCase()
    .replace(/[^a-z\s]/g, ' ')
    .replace(/\s+/g, ' ')
    .trim();

function levenshtein(a: string, b: string): number {
  if (a === b) return 0;
  let previous = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(previous[j]! + 1, current[j - 1]! + 1, previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    previous = current;
  }
  return previous[b.length]!;
}

export function similarity(a: string, b: string): number {
  const longest = Math.max(a.length, b.length);
  return longest === 0 ? 1 : 1 - levenshtein(a, b) / longest;
}

/** The field a label names and how well it matched, or null below MIN_LABEL_SIMILARITY. */
export function matchLabel(label: string): { field: FieldName; score: number } | null {
  const read = normalise(label);
  if (read.length < 2) return null;
  let best: { field: FieldName; score: number } | null = null;
  for (const field of fieldNames) {
    for (const wording of labels[field]) {
      const score = similarity(read, wording);
      // Ties go to the longer wording's field order: earlier fields win, which is stable.
      if (score >= MIN_LABEL_SIMILARITY && (!best || score > best.score)) best = { field, score };
    }
  }
  return best;
}

// ---- Values ---------------------------------------------------------------------------------------

/** Letters OCR reads in place of digits, inside a group that is mostly digits. */
const digitLookalikes: Record<string, string> = {
  O: '0',
  o: '0',
  Q: '0',
  D: '0',
  I: '1',
  l: '1',
  '|': '1',
  i: '1',
  Z: '2',
  z: '2',
  S: '5',
  s: '5',
  B: '8',
  G: '6',
};

interface Parsed<T> {
  value: T;
  /** 1 when read as is, lower when OCR look-alikes had to be replaced. */
  certainty: number;
}

/** Whole currency units from "$4,250.00", "4.250,00 EUR", "4 25O", "USD 18500"; null when no amount. */
export function parseAmount(text: string): Parsed<number> | null {
  let body = text
    .replace(/(usd|eur|gbp|chf|dollars?|euros?)/gi, ' ')
    .replace(/[$€£¥]/g, ' ')
    .replace(/\/\s*(month|mo|m)\b.*$/i, '')
    .replace(/\b(per|a)\s+month\b.*$/i, '')
    .trim();
  let replaced = 0;
  body = body.replace(/[OoQDIl|iZzSsBG]/g, (char, offset: number, whole: string) => {
    // Only between or next to digits/separators: "Oct" stays letters, "4,25O" becomes "4,250".
    const near = `${whole[offset - 1] ?? ''}${whole[offset + 1] ?? ''}`;
    if (!/[0-9.,]/.test(near)) return char;
    replaced++;
    return digitLookalikes[char] ?? char;
  });
  const match = /[0-9][0-9.,' ]*[0-9]|[0-9]/.exec(body);
  if (!match) return null;
  let digits = match[0].replace(/[' ]/g, '');
  // The last separator followed by exactly 1-2 digits is a decimal point; every other one groups thousands.
  const decimal = /[.,]([0-9]{1,2})$/.exec(digits);
  let fraction = 0;
  if (decimal) {
    fraction = Number(`0.${decimal[1]}`);
    digits = digits.slice(0, decimal.index);
  }
  const whole = digits.replace(/[.,]/g, '');
  if (!/^[0-9]{1,12}$/.test(whole)) return null;
  return { value: Math.round(Number(whole) + fraction), certainty: replaced === 0 ? 1 : 0.85 ** replaced };
}

/** "ID-48213O75" -> "ID-48213075": in a group that is mostly digits, look-alike letters become digits. */
export function parseIdentity(text: string): Parsed<string> | null {
  const token = text
    .trim()
    .split(/\s+/)
    .filter((part) => part.length > 0)
    .join('');
  const candidate = /[A-Za-z0-9|][A-Za-z0-9|-]{2,40}[A-Za-z0-9|]/.exec(token)?.[0];
  if (!candidate) return null;
  let replaced = 0;
  const value = candidate
    .split('-')
    .map((group) => {
      const digits = group.replace(/[^0-9]/g, '').length;
      if (digits * 2 < group.length) return group.toUpperCase();
      return group.replace(/[^0-9]/g, (char) => {
        const digit = digitLookalikes[char];
        if (!digit) return char.toUpperCase();
        replaced++;
        return digit;
      });
    })
    .join('-');
  if (!/^[A-Za-z0-9-]{4,32}$/.test(value) || !/[0-9]/.test(value)) return null;
  return { value, certainty: replaced === 0 ? 1 : 0.85 ** replaced };
}

/** A person's name: letters, spaces, apostrophes, dots and hyphens; at least two letters. */
export function parseName(text: string): Parsed<string> | null {
  const value = text
    .replace(/[^\p{L}\s'.-]/gu, ' ')
    .replace(/\s+/g, ' ')
    .replace(/^[\s'.-]+|[\s'.-]+$/g, '');
  if ((value.match(/\p{L}/gu) ?? []).length < 2) return null;
  // Digits or symbols dropped from the name are a sign of a misread.
  const dropped = text.replace(/\s/g, '').length - value.replace(/\s/g, '').length;
  return { value: value.slice(0, 200), certainty: dropped <= 0 ? 1 : 0.9 ** Math.min(dropped, 5) };
}

const parsers: Record<FieldName, (text: string) => Parsed<string | number> | null> = {
  applicantName: parseName,
  monthlyIncome: parseAmount,
  loanAmount: parseAmount,
  identityNumber: parseIdentity,
};

// ---- Lines --------------------------------------------------------------------------------------

interface Split {
  label: string;
  labelWords: Word[];
  valueWords: Word[];
  field: FieldName;
  score: number;
}

/**
 * Where the label ends: at a colon (or the semicolon OCR makes of one) when the line has one, else
 * the prefix of up to MAX_LABEL_WORDS words that reads best as a label.
 */
function splitLine(words: Word[]): Split | null {
  const colon = words.findIndex((word) => /[:;]$/.test(word.text));
  if (colon >= 0) {
    if (colon >= MAX_LABEL_WORDS) return null;
    const labelWords = words.slice(0, colon + 1);
    const label = labelWords
      .map((word) => word.text)
      .join(' ')
      .replace(/\s*[:;]$/, '');
    const match = matchLabel(label);
    return match ? { label, labelWords, valueWords: words.slice(colon + 1), ...match } : null;
  }
  let best: Split | null = null;
  for (let n = 1; n <= Math.min(MAX_LABEL_WORDS, words.length); n++) {
    // A label is words, not values: stop at the first word with a digit or a currency sign.
    if (/[0-9$€£¥]/.test(words[n - 1]!.text)) break;
    const labelWords = words.slice(0, n);
    const label = labelWords.map((word) => word.text).join(' ');
    const match = matchLabel(label);
    if (match && (!best || match.score >= best.score))
      best = { label, labelWords, valueWords: words.slice(n), ...match };
  }
  return best;
}

/** "income:$4,250" -> "income:" "$4,250": a colon glued to the value still ends the label. */
function splitAtColon(word: Word): Word[] {
  const text = word.text.trim();
  if (text.length === 0) return [];
  const at = text.search(/[:;]./);
  if (at <= 0) return [{ text, confidence: word.confidence }];
  return [
    { text: text.slice(0, at + 1), confidence: word.confidence },
    { text: text.slice(at + 1), confidence: word.confidence },
  ];
}

const mean = (values: number[]) => values.reduce((sum, v) => sum + v, 0) / values.length;
const round3 = (value: number) => Math.round(value * 1000) / 1000;

/**
 * The fields found in the lines. A label alone on its line takes its value from the next line. When a
 * field is found twice, the more confident reading wins (the first on a tie).
 */
export function extractFields(lines: Line[]): ExtractedFields {
  const found: ExtractedFields = {};
  const cleaned = lines.map((line) => line.words.flatMap(splitAtColon));
  for (let i = 0; i < cleaned.length; i++) {
    const words = cleaned[i]!;
    if (words.length === 0) continue;
    const split = splitLine(words);
    if (!split) continue;
    let valueWords = split.valueWords;
    if (valueWords.length === 0 && i + 1 < cleaned.length && !splitLine(cleaned[i + 1]!)) valueWords = cleaned[i + 1]!;
    if (valueWords.length === 0) continue;
    const parsed = parsers[split.field](valueWords.map((word) => word.text).join(' '));
    if (!parsed) continue;
    const recognised = mean(valueWords.map((word) => Math.max(0, Math.min(100, word.confidence)))) / 100;
    const confidence = round3(Math.max(0, Math.min(1, split.score * recognised * parsed.certainty)));
    const previous = found[split.field];
    if (previous && previous.confidence >= confidence) continue;
    (found as Record<FieldName, ExtractedField<unknown>>)[split.field] = {
      value: parsed.value,
      confidence,
      label: split.label,
    };
  }
  return found;
}

/** Lines from plain text (a PDF's text layer), each word at the text layer's fixed confidence. */
export function linesFromText(text: string, confidence = TEXT_LAYER_WORD_CONFIDENCE): Line[] {
  return text.split(/\r?\n/).map((line) => ({
    words: line
      .split(/\s+/)
      .filter((word) => word.length > 0)
      .map((word) => ({ text: word, confidence })),
  }));
}
