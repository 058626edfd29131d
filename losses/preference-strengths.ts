/**
 * The four annotator strengths of Llama 2/3 preference data, strongest first. Plain data (no
 * tfjs), so row schemas, the store and the command line can name them without loading tensors.
 */
export const PREFERENCE_STRENGTHS = ['significantly_better', 'better', 'slightly_better', 'marginally_better'] as const;
export type PreferenceStrength = (typeof PREFERENCE_STRENGTHS)[number];
